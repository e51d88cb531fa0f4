// Preloaded with NODE_OPTIONS=--require into Node MCP clients that have no header option (the
// conformance suite): every fetch to LEDGERGATE_URL carries `Authorization: Bearer $LEDGERGATE_TOKEN`,
// as a configured MCP client would send it.
const prefix = process.env.LEDGERGATE_URL;
const token = process.env.LEDGERGATE_TOKEN;
const original = globalThis.fetch;
if (prefix && token && original) {
  globalThis.fetch = function (input, init = {}) {
    const url = typeof input === 'string' ? input : (input && (input.href || input.url)) || '';
    if (String(url).startsWith(prefix)) {
      const headers = new Headers(init.headers || (typeof input === 'object' && input.headers) || {});
      if (!headers.has('authorization')) headers.set('authorization', `Bearer ${token}`);
      init = { ...init, headers };
    }
    return original.call(this, input, init);
  };
}

// The suite's DNS-rebinding scenario talks through undici's request() directly.
if (prefix && token) {
  try {
    const undici = require('undici');
    const request = undici.request;
    undici.request = function (url, options = {}) {
      if (String(url).startsWith(prefix)) {
        const headers = { ...(options.headers || {}) };
        if (!Object.keys(headers).some((k) => k.toLowerCase() === 'authorization')) {
          headers.authorization = `Bearer ${token}`;
        }
        options = { ...options, headers };
      }
      return request.call(this, url, options);
    };
  } catch (err) {
    // no undici here: nothing to wrap
  }
}
