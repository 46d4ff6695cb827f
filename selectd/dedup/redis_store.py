"""The Redis store: one Redis server shared by every replica of the consumer group, so
near-duplicates that arrive on different partitions (different replicas) are caught.

A batch is one ``EVALSHA`` of a Lua script: one round trip, and atomic (Redis runs a script with
no other client's command in between), so two replicas claiming the same key in concurrent
batches see one winner, and no replica ever sees half of another's batch (which could make two
documents each other's duplicate after a crash). The script walks the documents and keys in
batch order with the same semantics as the embedded store (store.py).

Memory: keys are grouped into Redis hashes by their top ``bucket_bits`` bits, so most hashes
stay in Redis's compact listpack encoding (up to ``hash-max-listpack-entries``, 128 by default):
about 20 bytes per key (8-byte field, 8-byte owner tag) instead of ~90 for a string key. Owner
ids are stored once per document (``tag -> id``, bucketed the same way), not once per key. Choose
``bucket_bits`` so that keys / 2^bucket_bits stays under ~100 (log2(expected keys / 100));
``bucket_bits`` is recorded in the server on first use and a different value is refused, since
it decides where every key lives.

Client: a minimal RESP2 client (below) rather than redis-py: the store needs four commands on one
connection, and errors must surface as :class:`StoreError` at once (the daemon's commit loop owns
retry and backoff) rather than through a library's own retry policy. It speaks ``redis://``,
``rediss://`` (TLS) and ``unix://`` URLs with a password and database number. Redis Cluster is
not supported (the script touches keys it does not declare).
"""
from __future__ import annotations

import hashlib
import socket
import ssl
from typing import Any, Sequence
from urllib.parse import parse_qs, unquote, urlsplit

from selectd.dedup.keys import KeyBatch
from selectd.dedup.store import DedupStore, Match, StoreError, StoreOpenError, StoreStats

_SCRIPT = """
local prefix, scale = ARGV[1], 2 ^ (24 - tonumber(ARGV[2]))
local function bucket(kind, x)
  return prefix .. kind .. math.floor((string.byte(x, 1) * 65536 + string.byte(x, 2) * 256 + string.byte(x, 3)) / scale)
end
local out, i, new_keys, new_docs = {}, 3, 0, 0
while i <= #ARGV do
  local id, tag, n = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2])
  i = i + 3
  local match, claimed = nil, false
  for j = 0, n - 1 do
    local key = ARGV[i + j]
    local hash = bucket('k', key)
    local owner = redis.call('HGET', hash, key)
    if not owner then
      redis.call('HSET', hash, key, tag)
      claimed = true
      new_keys = new_keys + 1
    elseif owner ~= tag and not match then
      match = {j, owner}
    end
  end
  i = i + n
  if claimed then
    redis.call('HSET', bucket('i', tag), tag, id)
    new_docs = new_docs + 1
  end
  if match then
    out[#out + 1] = {match[1], redis.call('HGET', bucket('i', match[2]), match[2])}
  else
    out[#out + 1] = 0
  end
end
redis.call('INCRBY', prefix .. 'count:keys', new_keys)
redis.call('INCRBY', prefix .. 'count:docs', new_docs)
return out
"""
_SCRIPT_SHA = hashlib.sha1(_SCRIPT.encode()).hexdigest()


class RedisReplyError(Exception):
    """An error reply (``-ERR ...``) from the server."""


class RespClient:
    """One connection speaking RESP2; reconnects on the next call after a failure."""

    def __init__(self, url: str, timeout_s: float):
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss", "unix"):
            raise StoreOpenError(f"redis url {url!r}: scheme must be redis://, rediss:// or unix://")
        self.scheme = parts.scheme
        self.address: Any = parts.path if parts.scheme == "unix" else (parts.hostname or "localhost", parts.port or 6379)
        self.username = unquote(parts.username) if parts.username else None
        self.password = unquote(parts.password) if parts.password else None
        query = parse_qs(parts.query)
        db = query.get("db", [parts.path.strip("/") if parts.scheme != "unix" else ""])[0] or "0"
        if not db.isdigit():
            raise StoreOpenError(f"redis url {url!r}: database must be a number")
        self.db = int(db)
        self.timeout_s = timeout_s
        self._sock: socket.socket | None = None
        self._reader = None

    def _connect(self) -> None:
        if self.scheme == "unix":
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(self.timeout_s)
            sock.connect(self.address)
        else:
            sock = socket.create_connection(self.address, timeout=self.timeout_s)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.scheme == "rediss":
                sock = ssl.create_default_context().wrap_socket(sock, server_hostname=self.address[0])
        self._sock, self._reader = sock, sock.makefile("rb")
        if self.password is not None:
            self._roundtrip([("AUTH", self.username, self.password) if self.username else ("AUTH", self.password)])
        if self.db:
            self._roundtrip([("SELECT", self.db)])

    def close(self) -> None:
        if self._sock is not None:
            self._reader.close()
            self._sock.close()
        self._sock = self._reader = None

    def call(self, *args) -> Any:
        """Send one command, return its reply (an error reply raises :class:`RedisReplyError`)."""
        return self.pipeline([args])[0]

    def pipeline(self, commands: Sequence[Sequence]) -> list[Any]:
        """Send several commands in one write, read their replies: one round trip."""
        try:
            if self._sock is None:
                self._connect()
            return self._roundtrip(commands)
        except (OSError, EOFError) as exc:  # socket.timeout and ssl.SSLError are OSErrors
            self.close()
            raise StoreError(f"redis {self.address}: {exc or type(exc).__name__}") from exc

    def _roundtrip(self, commands: Sequence[Sequence]) -> list[Any]:
        out = bytearray()
        for command in commands:
            out += b"*%d\r\n" % len(command)
            for arg in command:
                data = arg if isinstance(arg, bytes) else str(arg).encode()
                out += b"$%d\r\n%s\r\n" % (len(data), data)
        self._sock.sendall(out)
        replies = [self._read() for _ in commands]
        errors = [reply for reply in replies if isinstance(reply, RedisReplyError)]
        if errors:
            raise errors[0]
        return replies

    def _read(self) -> Any:
        line = self._reader.readline()
        if not line.endswith(b"\r\n"):
            raise EOFError("connection closed by the server")
        kind, body = line[:1], line[1:-2]
        if kind == b"+":
            return body.decode()
        if kind == b"-":
            return RedisReplyError(body.decode(errors="replace"))
        if kind == b":":
            return int(body)
        if kind == b"$":
            size = int(body)
            if size < 0:
                return None
            data = self._reader.read(size + 2)
            if len(data) != size + 2:
                raise EOFError("connection closed by the server")
            return data[:-2]
        if kind == b"*":
            size = int(body)
            return None if size < 0 else [self._read() for _ in range(size)]
        raise EOFError(f"unexpected reply {line[:40]!r}")


def _tag(doc_id: str) -> bytes:
    """8 bytes standing for a document id in the key hashes (the id itself is stored once)."""
    return hashlib.blake2b(doc_id.encode("utf-8", "surrogatepass"), digest_size=8).digest()


class RedisStore(DedupStore):
    def __init__(self, url: str, prefix: str = "selectd:dedup:", bucket_bits: int = 20, timeout_s: float = 5.0):
        if not 1 <= bucket_bits <= 24:
            raise StoreOpenError(f"bucket_bits must be 1..24, not {bucket_bits}")
        self.prefix = prefix
        self.bucket_bits = bucket_bits
        self.client = RespClient(url, timeout_s)
        self.round_trips = 0
        try:
            version = self._server_version()
            if version < (7, 0):
                raise StoreOpenError(f"redis {self.client.address}: server {'.'.join(map(str, version))} is older than 7.0")
            meta = prefix + "meta"
            self.client.call("HSETNX", meta, "bucket_bits", bucket_bits)
            stored = int(self.client.call("HGET", meta, "bucket_bits"))
            if stored != bucket_bits:
                raise StoreOpenError(f"redis {self.client.address}: keys under {prefix!r} were written with "
                                     f"bucket_bits = {stored}, not {bucket_bits} (they would not be found)")
            self.client.call("SCRIPT", "LOAD", _SCRIPT)
        except (StoreError, RedisReplyError) as exc:
            self.client.close()
            if isinstance(exc, StoreOpenError):
                raise
            raise StoreOpenError(f"cannot open the dedup store: {exc}") from exc

    def _server_version(self) -> tuple[int, ...]:
        info = self.client.call("INFO", "server").decode()
        line = next(line for line in info.splitlines() if line.startswith("redis_version:"))
        return tuple(int(part) for part in line.split(":", 1)[1].split(".")[:2])

    def claim(self, batch: KeyBatch, ids: Sequence[str]) -> list[Match | None]:
        if len(ids) != len(batch):
            raise ValueError(f"{len(ids)} ids for {len(batch)} documents")
        key_bytes = batch.keys.astype("<u8").tobytes()
        args: list[Any] = [self.prefix, self.bucket_bits]
        offsets = batch.offsets.tolist()
        for d, doc_id in enumerate(ids):
            start, end = offsets[d], offsets[d + 1]
            args += [doc_id, _tag(doc_id), end - start]
            args += [key_bytes[8 * i:8 * i + 8] for i in range(start, end)]
        try:
            try:
                reply = self.client.call("EVALSHA", _SCRIPT_SHA, 0, *args)
            except RedisReplyError as exc:
                if not str(exc).startswith("NOSCRIPT"):  # the server restarted or flushed its scripts
                    raise
                reply = self.client.call("EVAL", _SCRIPT, 0, *args)
        except RedisReplyError as exc:
            raise StoreError(f"redis {self.client.address}: {exc}") from exc
        self.round_trips += 1
        return [None if item == 0 else Match(item[0], item[1].decode("utf-8", "surrogatepass") if item[1] else None)
                for item in reply]

    def stats(self) -> StoreStats:
        """Documents and keys under this prefix (counters the script keeps); memory: the server's
        whole ``used_memory``."""
        try:
            docs, keys, memory = self.client.pipeline([("GET", self.prefix + "count:docs"),
                                                       ("GET", self.prefix + "count:keys"), ("INFO", "memory")])
        except RedisReplyError as exc:
            raise StoreError(f"redis {self.client.address}: {exc}") from exc
        used = next(line for line in memory.decode().splitlines() if line.startswith("used_memory:"))
        return StoreStats(int(docs or 0), int(keys or 0), 0, int(used.split(":")[1]))

    def close(self) -> None:
        self.client.close()
