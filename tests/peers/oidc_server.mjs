// A real OpenID provider for the identity tests: oauth2-mock-server on 127.0.0.1.
//
//   node tests/peers/oidc_server.mjs [port]     (port 0 or absent: any free port)
//
// Prints one JSON line {"issuer": "...", "kid": "..."} when listening, then serves:
//   the provider's own endpoints (discovery, /jwks, POST /token issuing RS256 JWTs);
//   POST /token accepts a JSON body with extra fields the tests use:
//     "claims": {...}  merged into the payload (null deletes a claim; iat/exp/nbf allowed)
//     "header": {...}  merged into the JOSE header (e.g. a different kid)
//   POST /_control/rotate            generate a new RS256 key; answers {"kid"}; new tokens use it
//   POST /_control/retire {"kid"}    stop publishing a key in /jwks (it can no longer sign)
//   POST /_control/login {"claims"}  claims merged into the tokens of every later authorization-code
//                                    sign-in (GET /authorize signs in at once; who is the sub claim)
//   GET  /_control/keys              the public JWKS including retired keys (for forging tests)
// Control endpoints exist only in this test script.
import http from 'node:http';
import { OAuth2Issuer, OAuth2Service } from 'oauth2-mock-server';

const port = Number(process.argv[2] || 0);
const issuer = new OAuth2Issuer();
let current = (await issuer.keys.generate('RS256')).kid;
const retired = new Set();
let loginClaims = null;
const service = new OAuth2Service(issuer);

service.on('beforeTokenSigning', (token, req) => {
  const body = req.body || {};
  if (body.claims && typeof body.claims === 'object') {
    for (const [k, v] of Object.entries(body.claims)) {
      if (v === null) delete token.payload[k];
      else token.payload[k] = v;
    }
  }
  if (loginClaims && body.grant_type === 'authorization_code') {
    for (const [k, v] of Object.entries(loginClaims)) {
      if (v === null) delete token.payload[k];
      else token.payload[k] = v;
    }
  }
  token.header.kid = current;
  if (body.header && typeof body.header === 'object') Object.assign(token.header, body.header);
});

// Tokens must be signed with the current key: the mock rotates round-robin otherwise.
const build = issuer.buildToken.bind(issuer);
issuer.buildToken = (opts = {}) => build({ ...opts, kid: current });

function readJson(req) {
  return new Promise((resolve) => {
    let data = '';
    req.on('data', (c) => { data += c; });
    req.on('end', () => { try { resolve(data ? JSON.parse(data) : {}); } catch { resolve({}); } });
  });
}

function send(res, status, body) {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body));
}

const server = http.createServer(async (req, res) => {
  const url = new URL(req.url, 'http://x');
  if (req.method === 'POST' && url.pathname === '/_control/rotate') {
    current = (await issuer.keys.generate('RS256')).kid;
    return send(res, 200, { kid: current });
  }
  if (req.method === 'POST' && url.pathname === '/_control/retire') {
    const body = await readJson(req);
    retired.add(body.kid);
    return send(res, 200, { retired: [...retired] });
  }
  if (req.method === 'POST' && url.pathname === '/_control/login') {
    const body = await readJson(req);
    loginClaims = body.claims && typeof body.claims === 'object' ? body.claims : null;
    return send(res, 200, { claims: loginClaims });
  }
  if (req.method === 'GET' && url.pathname === '/_control/keys') {
    return send(res, 200, { keys: issuer.keys.toJSON() });
  }
  if (req.method === 'GET' && url.pathname === '/jwks') {
    return send(res, 200, { keys: issuer.keys.toJSON().filter((k) => !retired.has(k.kid)) });
  }
  return service.requestHandler(req, res);
});

server.listen(port, '127.0.0.1', () => {
  const { port: bound } = server.address();
  issuer.url = `http://127.0.0.1:${bound}`;
  process.stdout.write(JSON.stringify({ issuer: issuer.url, kid: current }) + '\n');
});

for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => server.close(() => process.exit(0)));
