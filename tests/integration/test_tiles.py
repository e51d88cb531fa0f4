"""The ledger served as C2SP tlog-tiles over real HTTP (uvicorn), on SQLite and PostgreSQL,
read by Go's golang.org/x/mod/sumdb/tlog: its TileHashReader authenticates our tiles against
our signed checkpoint and proves a record from our entry bundle. Plus the byte-level content of
every tile against a recomputation from the records, and who may read what through the gateway."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import textwrap
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ledgergate.api.tiles import Endpoint, tile_routes
from ledgergate.audit import merkle, tiles
from ledgergate.audit.checkpoint import load_verifier, open_checkpoint
from ledgergate.audit.ledger import Ledger
from test_ledger_store import run_sql, settings, store_url  # noqa: F401 - shared fixture
from test_stored_hashes import fill
from tests.support.procs import free_port

pytestmark = pytest.mark.timeout(300)
GOPATH = Path("/usr/share/gocode")
TOKEN = "test-auditor"

GO_PROGRAM = textwrap.dedent("""
    package main

    import (
        "encoding/binary"
        "fmt"
        "io"
        "net/http"
        "os"
        "strconv"
        "strings"

        "golang.org/x/mod/sumdb/note"
        "golang.org/x/mod/sumdb/tlog"
    )

    func get(url, token string) ([]byte, error) {
        req, err := http.NewRequest("GET", url, nil)
        if err != nil { return nil, err }
        if token != "" { req.Header.Set("Authorization", "Bearer "+token) }
        resp, err := http.DefaultClient.Do(req)
        if err != nil { return nil, err }
        defer resp.Body.Close()
        if resp.StatusCode != 200 { return nil, fmt.Errorf("GET %s: %s", url, resp.Status) }
        return io.ReadAll(resp.Body)
    }

    // C2SP tlog-tiles paths are Go's tile paths without the height element (always 8).
    type tileReader struct{ prefix string }

    func (r tileReader) Height() int { return 8 }
    func (r tileReader) SaveTiles([]tlog.Tile, [][]byte) {}
    func (r tileReader) ReadTiles(ts []tlog.Tile) ([][]byte, error) {
        out := make([][]byte, len(ts))
        for i, t := range ts {
            b, err := get(r.prefix+"/tile/"+strings.TrimPrefix(t.Path(), "tile/8/"), "")
            if err != nil { return nil, err }
            out[i] = b
        }
        return out, nil
    }

    func fail(what string, err error) { fmt.Println(what+":", err); os.Exit(1) }

    func main() {
        prefix, token := os.Args[1], os.Args[4]
        index, _ := strconv.ParseInt(os.Args[3], 10, 64)
        vkey, err := os.ReadFile(os.Args[2])
        if err != nil { fail("vkey", err) }
        v, err := note.NewVerifier(strings.TrimSpace(string(vkey)))
        if err != nil { fail("verifier", err) }
        msg, err := get(prefix+"/checkpoint", "")
        if err != nil { fail("checkpoint", err) }
        n, err := note.Open(msg, note.VerifierList(v))
        if err != nil { fail("open", err) }
        lines := strings.Split(n.Text, "\\n")
        size, _ := strconv.ParseInt(lines[1], 10, 64)
        root, err := tlog.ParseHash(lines[2])
        if err != nil { fail("root", err) }
        thr := tlog.TileHashReader(tlog.Tree{N: size, Hash: root}, tileReader{prefix})
        th, err := tlog.TreeHash(size, thr)
        if err != nil { fail("tree hash", err) }
        if th != root { fail("tree hash", fmt.Errorf("%v != %v", th, root)) }

        bundle := index / 256
        w := size - bundle*256
        if w > 256 { w = 256 }
        t := tlog.Tile{H: 8, L: 0, N: bundle, W: int(w)}
        data, err := get(prefix+"/tile/entries/"+strings.TrimPrefix(t.Path(), "tile/8/0/"), token)
        if err != nil { fail("entries", err) }
        var entries [][]byte
        for len(data) > 0 {
            l := int(binary.BigEndian.Uint16(data))
            entries = append(entries, data[2:2+l])
            data = data[2+l:]
        }
        if int64(len(entries)) != w { fail("entries", fmt.Errorf("%d entries, want %d", len(entries), w)) }
        idx := make([]int64, len(entries))
        for j := range entries { idx[j] = tlog.StoredHashIndex(0, bundle*256+int64(j)) }
        hs, err := thr.ReadHashes(idx)
        if err != nil { fail("leaf hashes", err) }
        for j, e := range entries {
            if tlog.RecordHash(e) != hs[j] { fail("entry", fmt.Errorf("entry %d does not hash to its tile", j)) }
        }
        rec := entries[index-bundle*256]
        proof, err := tlog.ProveRecord(size, index, thr)
        if err != nil { fail("prove", err) }
        if err := tlog.CheckRecord(proof, size, root, index, tlog.RecordHash(rec)); err != nil { fail("check", err) }
        fmt.Printf("ok %s %d %d\\n%s\\n", lines[0], size, index, rec)
    }
""")


@pytest.fixture(scope="module")
def go_reader(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str]]]:
    go = shutil.which("go")
    if go is None or not (GOPATH / "src/golang.org/x/mod/sumdb/tlog").is_dir():
        pytest.fail("Go toolchain or golang.org/x/mod not installed (apt-get install golang-go golang-golang-x-mod-dev)")
    tmp = tmp_path_factory.mktemp("go")
    src = tmp / "src" / "tiles"
    src.mkdir(parents=True)
    (src / "main.go").write_text(GO_PROGRAM)
    env = {"GOPATH": f"{tmp / 'gopath'}:{GOPATH}", "GO111MODULE": "off", "GOFLAGS": "-mod=mod",
           "GOCACHE": str(tmp / "gocache"), "PATH": "/usr/bin:/bin", "HOME": str(tmp)}
    binary = tmp / "tilecheck"
    run = subprocess.run([go, "build", "-o", str(binary), str(src / "main.go")], capture_output=True, text=True,
                         env=env, timeout=240)
    assert run.returncode == 0, run.stdout + run.stderr
    yield str(binary), env


def bearer_guard(endpoint: Endpoint) -> Endpoint:
    """Stands in for the gateway's auditor check (tested through the real gateway below)."""
    async def guarded(request: Request) -> Response:
        if request.headers.get("authorization") != f"Bearer {TOKEN}":
            return JSONResponse({"error": "Unauthorized"}, status_code=401)
        return await endpoint(request)

    return guarded


@pytest_asyncio.fixture()
async def served(store_url: str, tmp_path: Path) -> AsyncIterator[tuple[Ledger, str]]:  # noqa: F811
    ledger = await Ledger.open(settings(), store_url, tmp_path)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(Starlette(routes=tile_routes(ledger, bearer_guard)), host="127.0.0.1",
                                           port=port, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.02)
    try:
        yield ledger, f"http://127.0.0.1:{port}/api/v1/audit/tiles/replica-a"
    finally:
        server.should_exit = True
        await task
        await ledger.close()


async def go_check(go_reader: tuple[str, dict[str, str]], prefix: str, vkey: Path, index: int,
                   token: str = TOKEN) -> tuple[int, str]:
    binary, env = go_reader
    proc = await asyncio.create_subprocess_exec(binary, prefix, str(vkey), str(index), token, env=env,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode()


async def test_go_tlog_reads_our_tiles_and_proves_a_record(served: tuple[Ledger, str], tmp_path: Path,
                                                           go_reader: tuple[str, dict[str, str]]) -> None:
    ledger, prefix = served
    await fill(ledger, 600)  # 2 full level-0 tiles, a partial of 88; a partial level-1 tile of 2
    await ledger.checkpoint()
    await fill(ledger, 40)  # tiles beyond the checkpoint exist too; Go must be bound by the checkpoint
    vkey = tmp_path / "data" / "ledger.key.pub"
    for index in (0, 300, 555, 599):
        code, out = await go_check(go_reader, prefix, vkey, index)
        assert code == 0, out
        head, record = out.split("\n")[:2]
        assert head == f"ok ledgergate/replica-a 600 {index}"
        assert (await ledger.leaf(index)).record == record.encode()  # type: ignore[union-attr]
    code, out = await go_check(go_reader, prefix, vkey, 5, token="wrong")
    assert code == 1 and "401" in out, out


async def test_go_tlog_refuses_tiles_from_an_altered_stored_hash(store_url: str, served: tuple[Ledger, str],  # noqa: F811
                                                                 tmp_path: Path,
                                                                 go_reader: tuple[str, dict[str, str]]) -> None:
    ledger, prefix = served
    await fill(ledger, 600)
    await ledger.checkpoint()
    run_sql(store_url, "UPDATE ledger_hashes SET hash = ? WHERE level = 8 AND idx = 1", (b"\x07" * 32,))
    code, out = await go_check(go_reader, prefix, tmp_path / "data" / "ledger.key.pub", 10)
    # the server checks the tile against the signed checkpoint first, and refuses it (Go would refuse it too)
    assert code == 1 and "tile/1/000.p/2: 503" in out, out
    async with httpx.AsyncClient(base_url=prefix, timeout=30) as http:
        r = await http.get("/tile/1/000.p/2")
    assert r.status_code == 503 and r.headers["cache-control"] == "no-store", r.text
    assert r.json()["error"] == ("log replica-a: the store's stored hashes do not match its records at level 8 "
                                 "index 1 (records 256..511); run `ledgergate audit verify`")


async def test_every_tile_is_the_recomputed_hashes_and_records(served: tuple[Ledger, str], tmp_path: Path) -> None:
    ledger, prefix = served
    await fill(ledger, 70)
    await fill(ledger, 530)
    size = ledger.size
    records = [(await ledger.leaf(i)).record for i in range(size)]  # type: ignore[union-attr]
    leaves = [merkle.leaf_hash(r) for r in records]
    async with httpx.AsyncClient(base_url=prefix, timeout=30) as http:
        cp = await http.get("/checkpoint")
        assert cp.status_code == 200 and cp.headers["content-type"] == "text/plain; charset=utf-8"
        assert open_checkpoint(cp.text, load_verifier(tmp_path / "data" / "ledger.key.pub")).size == size
        for tile in tiles.tiles_for(size):
            r = await http.get("/" + tile.path())
            assert r.status_code == 200 and r.headers["content-type"] == "application/octet-stream", tile
            assert r.headers["cache-control"] == "public, max-age=31536000, immutable"  # sizes and hashes only
            span = 1 << (8 * tile.level)  # type: ignore[operator]
            want = b"".join(merkle.root_of(leaves[(tile.index * 256 + i) * span:(tile.index * 256 + i + 1) * span])
                            for i in range(tile.width))
            assert r.content == want, tile
            if tile.level == 0:
                r = await http.get(f"/{tiles.tile_path(None, tile.index, tile.width)}",
                                   headers={"Authorization": f"Bearer {TOKEN}", "Accept-Encoding": "gzip"})
                assert r.status_code == 200 and r.headers["content-encoding"] == "gzip"
                start = tile.index * 256
                assert r.content == tiles.entry_bundle(records[start:start + tile.width])
                raw = await http.get(f"/{tiles.tile_path(None, tile.index, tile.width)}",
                                     headers={"Authorization": f"Bearer {TOKEN}", "Accept-Encoding": "identity"})
                assert "content-encoding" not in raw.headers and raw.content == r.content
                # the records are read with an auditor's token: no shared cache may keep them
                assert r.headers["cache-control"].startswith("private") and "public" not in raw.headers["cache-control"]
                for refusing in ("gzip;q=0", "x-gzip;q=0, identity", "*;q=0", "br"):
                    plain = await http.get(f"/{tiles.tile_path(None, tile.index, tile.width)}",
                                           headers={"Authorization": f"Bearer {TOKEN}", "Accept-Encoding": refusing})
                    assert "content-encoding" not in plain.headers and plain.content == r.content, refusing
                for admitting in ("GZIP", "x-gzip", "br, gzip;q=0.5", "*"):
                    packed = await http.get(f"/{tiles.tile_path(None, tile.index, tile.width)}",
                                            headers={"Authorization": f"Bearer {TOKEN}", "Accept-Encoding": admitting})
                    assert packed.headers.get("content-encoding") == "gzip", admitting
        # partial tiles narrower than the log holds are served too (a size some older checkpoint had)
        assert (await http.get("/tile/0/002.p/5")).content == b"".join(leaves[512:517])
        for missing in ("/tile/0/002", "/tile/0/002.p/89", "/tile/1/000", "/tile/2/000.p/1", "/tile/0/003.p/1"):
            r = await http.get(missing)
            assert r.status_code == 404 and "beyond the log" in r.json()["error"], missing
        for bad in ("/tile/0/2", "/tile/0/002.p/256", "/tile/x/000", "/tile/0/x000/002"):
            assert (await http.get(bad)).status_code == 404, bad
        assert (await http.get("/tile/entries/000")).status_code == 401
        assert (await http.get(prefix.replace("replica-a", "nobody") + "/checkpoint")).status_code == 404
        assert (await http.get(prefix.replace("replica-a", "nobody") + "/tile/0/000.p/1")).status_code == 404

