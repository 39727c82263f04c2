"""The local GCS emulator: gcp-storage-emulator 2026.7.19 with the fixes this project relies on.

Run it as `python -m devstack.emulators.gcs --host H --port P [--data-dir DIR]`.
What the pinned package gets wrong, and what this module changes (search for "FIX"):

1. It ignores ifGenerationMatch and friends, so a create-only write overwrites. Here every
   object route checks the four JSON API preconditions (and the XML API headers) and answers
   412 like GCS, atomically with the write.
2. Every write re-serialises the metadata of all objects (~37 writes/s at 2,000 objects).
   Here memory mode never serialises it and disk mode flushes it in the background.
3. A new object starts at metageneration 2 when the upload carries metadata; GCS says 1.
4. A `generation` parameter that is not the live generation is ignored, so deleting a stale
   handle deletes the newer object; GCS answers 404 (no bucket here keeps versions).
5. mediaLink is not URL-encoded, so get_blob(name).download_as_bytes() fails for names with
   '?', '#' or '%'.
6. maxResults and pageToken are ignored when listing, and so are startOffset and endOffset;
   and every listing walks every object of the bucket (then sorts the matches), so a page
   of 100 names under one prefix costs as much as the whole bucket. Here each bucket keeps
   its names sorted: a page costs O(log n + page), with GCS's paging (1,000 by default).
7. The server is single-threaded with a listen backlog of 5; here it is threaded, and one
   lock serialises the package's (thread-unsafe) handlers while sockets are read outside it.
8. A media download does not say which generation it returned (GCS sends X-Goog-Generation
   and X-Goog-Metageneration), so a client cannot make a read-modify-write conditional on what
   it read in one request: google-cloud-storage leaves blob.generation unset after a download.
"""

from __future__ import annotations

import argparse
import bisect
import importlib.metadata
import json
import logging
import os
import re
import signal
import threading
import time
import urllib.parse
from functools import partial
from http import HTTPStatus
from http.server import ThreadingHTTPServer
from pathlib import Path

from taskcore.errors import EmulatorError

PACKAGE = "gcp-storage-emulator"
PINNED_VERSION = "2026.7.19"


def check_package_version(found: str | None = None) -> None:
    """Raise EmulatorError unless the installed gcp-storage-emulator is the version patched here."""
    if found is None:
        try:
            found = importlib.metadata.version(PACKAGE)
        except importlib.metadata.PackageNotFoundError as err:
            raise EmulatorError(f"{PACKAGE}=={PINNED_VERSION} is not installed") from err
    if found != PINNED_VERSION:
        raise EmulatorError(
            f"devstack.emulators.gcs patches the internals of {PACKAGE}=={PINNED_VERSION}, "
            f"but {found} is installed: install the pinned version or re-check every FIX here"
        )


# The patch below reaches into private internals, so refuse any other version before importing them.
check_package_version()

from gcp_storage_emulator import server as gcs_server  # noqa: E402
from gcp_storage_emulator.handlers import objects as gcs_objects  # noqa: E402
from gcp_storage_emulator.settings import STORAGE_DIR  # noqa: E402
from gcp_storage_emulator.storage import Storage  # noqa: E402

log = logging.getLogger("devstack.emulators.gcs")

# Everything the package keeps in its .meta file.
_META_FIELDS = ("buckets", "objects", "resumable", "bucket_iam_policies", "soft_deleted")
_PRECONDITION_FAILED = "At least one of the pre-conditions you specified did not hold."


class _SortedNames(dict):
    """One bucket's objects by name, and its names in sorted order beside them (FIX 6).

    The package changes a bucket's objects only by item assignment, deletion and pop.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.names = sorted(self)

    def __setitem__(self, name, value) -> None:
        if name not in self:
            bisect.insort(self.names, name)
        super().__setitem__(name, value)

    def __delitem__(self, name) -> None:
        super().__delitem__(name)
        del self.names[bisect.bisect_left(self.names, name)]

    def pop(self, name, *default):
        if name in self:
            del self.names[bisect.bisect_left(self.names, name)]
        return super().pop(name, *default)

    def _unsupported(self, *args, **kwargs):
        raise NotImplementedError("the sorted names would go stale")

    setdefault = update = popitem = clear = _unsupported


class _Buckets(dict):
    """Bucket name → _SortedNames, whatever kind of dict the package assigns."""

    def __init__(self, buckets=None) -> None:
        super().__init__()
        for name, objects in (buckets or {}).items():
            self[name] = objects

    def __setitem__(self, name, objects) -> None:
        if not isinstance(objects, _SortedNames):
            objects = _SortedNames(objects)
        super().__setitem__(name, objects)


class EmulatorStorage(Storage):
    """The package's Storage with a lock, cheap metadata persistence and GCS-like new objects."""

    @property
    def objects(self) -> _Buckets:
        return self._objects

    @objects.setter
    def objects(self, buckets) -> None:
        # The package assigns it on load and on wipe; every bucket gets its sorted names.
        self._objects = _Buckets(buckets)

    def __init__(self, *args, **kwargs) -> None:
        # Re-entrant: package handlers call storage methods that call each other.
        self.lock = threading.RLock()
        self._flush_lock = threading.Lock()
        self._dirty = False
        # Once stopping, requests are refused (503, which clients retry), so every change the
        # emulator acknowledged is in the last flush.
        self.closed = False
        super().__init__(*args, **kwargs)

    def _write_config_to_file(self) -> None:
        # FIX 2: the package dumps every object's metadata here on every write, so a write
        # costs O(objects). In memory nothing ever reads it back; on disk flush() writes it.
        self._dirty = True

    def flush(self) -> None:
        """Write the metadata file if anything changed (disk mode), atomically."""
        if self._use_memory_fs:
            return
        with self._flush_lock:
            with self.lock:
                if not self._dirty:
                    return
                self._dirty = False
                # Serialise under the lock for a consistent snapshot; write outside it.
                raw = json.dumps({name: getattr(self, name) for name in _META_FIELDS})
            path = Path(self._data_dir) / STORAGE_DIR / ".meta"
            tmp = path.with_name(".meta.tmp")
            try:
                tmp.write_text(raw, encoding="utf-8")
                # A kill mid-write must never leave a truncated .meta the next start cannot parse.
                os.replace(tmp, path)
            except OSError:
                # E.g. a concurrent /wipe removed the temporary file: try again next time.
                log.warning("could not write %s; will retry", path, exc_info=True)
                self._dirty = True

    def close(self) -> None:
        """Refuse every request from now on, then write the metadata a last time."""
        with self.lock:
            self.closed = True
        self.flush()

    def create_file(self, bucket_name, file_name, content, file_obj, file_id=None):
        """Store a new generation of an object (the package's create_file, GCS-shaped)."""
        # FIX 3: every new generation starts at metageneration 1.
        file_obj["metageneration"] = "1"
        # FIX 5: the package puts the raw name in mediaLink, which the client then GETs.
        quoted = urllib.parse.quote(file_name, safe="")
        base = file_obj.get("mediaLink", "").split("/download/storage/v1/", 1)[0]
        file_obj["mediaLink"] = (
            f"{base}/download/storage/v1/b/{bucket_name}/o/{quoted}"
            f"?generation={file_obj['generation']}&alt=media"
        )
        file_obj["selfLink"] = f"/storage/v1/b/{bucket_name}/o/{quoted}"
        super().create_file(bucket_name, file_name, content, file_obj, file_id)


# --- FIX 1 and 4: preconditions, checked under the storage lock right before the handler.

_QUERY_CONDITIONS = {
    "ifGenerationMatch": "x-goog-if-generation-match",
    "ifGenerationNotMatch": None,
    "ifMetagenerationMatch": "x-goog-if-metageneration-match",
    "ifMetagenerationNotMatch": None,
}


def _conditions(request) -> dict[str, int]:
    """The preconditions a request carries, from the JSON API query or the XML API headers."""
    found = {}
    for name, header in _QUERY_CONDITIONS.items():
        value = request.query.get(name, [None])[0]
        if value is None and header:
            value = request.get_header(header)
        if value is not None:
            found[name] = int(value)
    return found


def _failed_condition(conditions: dict[str, int], obj: dict | None) -> str | None:
    """The first precondition that obj (None: no live object) does not meet, per the GCS docs."""
    generation = int(obj["generation"]) if obj else None
    metageneration = int(obj["metageneration"]) if obj else None
    for name, want in conditions.items():
        if name == "ifGenerationMatch":
            held = obj is None if want == 0 else generation == want
        elif name == "ifGenerationNotMatch":
            held = obj is not None and generation != want
        elif name == "ifMetagenerationMatch":
            held = metageneration == want
        else:
            held = obj is not None and metageneration != want
        if not held:
            return name
    return None


def _error(response, status: HTTPStatus, reason: str, message: str) -> None:
    """Answer with a GCS-shaped JSON error, which google-api-core maps to its exceptions."""
    response.status = status
    error = {"domain": "global", "reason": reason, "message": message}
    response.json({"error": {"code": status.value, "message": message, "errors": [error]}})


def _object_target(request, storage):
    return request.params["bucket_name"], request.params["object_id"]


def _copy_target(request, storage):
    return request.params["dest_bucket_name"], request.params["dest_object_id"]


def _upload_target(request, storage):
    """The object an upload writes: from the resumable session, the query or the metadata."""
    if "upload_id" in request.query:
        session = storage.resumable.get(request.query["upload_id"][0])
        return (session["bucket"], session["name"]) if session else None
    name = request.query.get("name", [None])[0]
    data = request.data
    if name is None and isinstance(data, dict):
        meta = data.get("meta") if request.query.get("uploadType") == ["multipart"] else data
        name = (meta or {}).get("name")
    return (request.params["bucket_name"], name) if name else None


# handler -> (kind, where its object is); "write" may create, "read"/"change" need a live one.
_TARGETS = {
    gcs_objects.insert: ("write", _upload_target),
    gcs_objects.upload_partial: ("write", _upload_target),
    gcs_objects.xml_upload: ("write", _object_target),
    gcs_objects.copy: ("write", _copy_target),
    gcs_objects.rewrite: ("write", _copy_target),
    gcs_objects.compose: ("write", _object_target),
    gcs_objects.get: ("read", _object_target),
    gcs_objects.download: ("read", _object_target),
    gcs_objects.delete: ("change", _object_target),
    gcs_objects.patch: ("change", _object_target),
}


def _refusal(request, response, storage, kind: str, target) -> bool:
    """Answer 412/304/404 and return True when the request must not reach the handler."""
    located = target(request, storage) if target else None
    if located is None:
        return False
    obj = storage.objects.get(located[0], {}).get(located[1])
    if kind != "write":
        if obj is None:
            return False  # the package answers 404
        generation = request.query.get("generation", [None])[0]
        soft = request.query.get("softDeleted", ["false"])[0].lower() in ("1", "true", "yes")
        if generation is not None and not soft and generation != obj["generation"]:
            _error(
                response, HTTPStatus.NOT_FOUND, "notFound", f"No such object: {'/'.join(located)}"
            )
            return True
    try:
        failed = _failed_condition(_conditions(request), obj)
    except ValueError:
        _error(response, HTTPStatus.BAD_REQUEST, "invalid", "Invalid precondition value.")
        return True
    if failed is None:
        return False
    if kind == "read" and failed.endswith("NotMatch"):
        # GCS answers a failed "not match" on a read with 304 and no body.
        response.status = HTTPStatus.NOT_MODIFIED
    else:
        _error(response, HTTPStatus.PRECONDITION_FAILED, "conditionNotMet", _PRECONDITION_FAILED)
    return True


def _guard(handler, kind: str | None = None, target=None):
    """Wrap a package handler: read the body, then check preconditions and run it under the lock."""

    def guarded(request, response, storage):
        # Reading the socket inside the lock would let one slow client stall every other.
        _ = request.data
        with storage.lock:
            if storage.closed:
                _error(response, HTTPStatus.SERVICE_UNAVAILABLE, "backendError", "Stopping.")
                return
            if kind and _refusal(request, response, storage, kind, target):
                return
            handler(request, response, storage)

    return guarded


def _download_with_generation(request, response, storage):
    """objects.download, plus the generation headers GCS sends with every media read (FIX 8)."""
    gcs_objects.download(request, response, storage)
    if response.status not in (HTTPStatus.OK, HTTPStatus.PARTIAL_CONTENT):
        return
    obj = storage.objects.get(request.params["bucket_name"], {}).get(request.params["object_id"])
    if obj is not None:
        response["X-Goog-Generation"] = str(obj["generation"])
        response["X-Goog-Metageneration"] = str(obj["metageneration"])


def _paged_ls(request, response, storage):
    """objects.list from the sorted names, with GCS's paging and offsets (FIX 6)."""
    query = {name: values[0] for name, values in request.query.items() if values}
    if "matchGlob" in query or query.get("softDeleted", "").lower() in ("1", "true", "yes"):
        _paged_ls_by_package(request, response, storage)
        return
    bucket_name = request.params["bucket_name"]
    if bucket_name not in storage.buckets:
        response.status = HTTPStatus.NOT_FOUND
        return
    try:
        limit = int(query.get("maxResults") or _LIST_PAGE) or _LIST_PAGE
    except ValueError:
        _error(response, HTTPStatus.BAD_REQUEST, "invalid", "Invalid maxResults.")
        return
    listing = _list_page(
        storage.objects.get(bucket_name, _SortedNames()),
        prefix=query.get("prefix", ""),
        delimiter=query.get("delimiter", ""),
        start=query.get("startOffset", ""),
        end=query.get("endOffset", ""),
        token=query.get("pageToken", ""),
        limit=min(limit, _LIST_PAGE),
    )
    response.json({"kind": "storage#objects", **listing})


# GCS answers at most this many names per page, and this many when maxResults is not given.
_LIST_PAGE = 1000


def _list_page(objects: _SortedNames, *, prefix, delimiter, start, end, token, limit) -> dict:
    """One page: objects and (with a delimiter) collapsed prefixes, in name order, after token."""
    names = objects.names
    i = bisect.bisect_left(names, max(prefix, start))
    if token:
        # The token is the last name (or collapsed prefix) the previous page returned.
        i = max(
            i,
            _past(names, token)
            if delimiter and token.endswith(delimiter)
            else bisect.bisect_right(names, token),
        )
    items, prefixes, last = [], [], None

    def within(position: int) -> bool:
        return (
            position < len(names)
            and names[position].startswith(prefix)
            and not (end and names[position] >= end)
        )

    while within(i) and len(items) + len(prefixes) < limit:
        name = names[i]
        cut = name.find(delimiter, len(prefix)) if delimiter else -1
        if cut >= 0:
            last = name[: cut + len(delimiter)]
            prefixes.append(last)
            i = _past(names, last)
        else:
            last = name
            items.append(objects[name])
            i += 1
    page = {"prefixes": prefixes, "items": items}
    if within(i):
        page["nextPageToken"] = last
    return page


def _past(names: list[str], prefix: str) -> int:
    """The position of the first name after every name that starts with prefix."""
    return bisect.bisect_left(names, prefix[:-1] + chr(ord(prefix[-1]) + 1))


def _paged_ls_by_package(request, response, storage):
    """The package's objects.list (for matchGlob and softDeleted), paged after the fact."""
    gcs_objects.ls(request, response, storage)
    max_results = int(request.query.get("maxResults", [0])[0])
    token = request.query.get("pageToken", [""])[0]
    if response.status != HTTPStatus.OK or not (max_results or token):
        return
    listing = json.loads(response._content)
    # GCS pages through objects and prefixes together, in name order.
    entries = sorted(
        [(obj["name"], obj) for obj in listing["items"]]
        + [(prefix, None) for prefix in listing["prefixes"]],
        key=lambda entry: entry[0],
    )
    entries = [entry for entry in entries if entry[0] > token]
    page = entries[:max_results] if max_results else entries
    listing["items"] = [obj for _name, obj in page if obj is not None]
    listing["prefixes"] = [name for name, obj in page if obj is None]
    if len(entries) > len(page):
        listing["nextPageToken"] = page[-1][0]
    response.json(listing)


def _routes():
    """The package's route table, every handler guarded and regexes compiled once."""
    routes = []
    for regex, handlers in gcs_server.HANDLERS:
        handlers = dict(handlers)
        if handlers.get("GET") is gcs_objects.download:
            handlers["GET"] = _download_with_generation
        if handlers.get("GET") is gcs_objects.ls:
            handlers["GET"] = _paged_ls
            # The package's Router special-cases POST uploads to .../o; a table entry does it here.
            handlers.setdefault("POST", gcs_objects.insert)
        guarded = {
            m: _guard(h, *_TARGETS.get(_UNPATCHED.get(h, h), (None, None)))
            for m, h in handlers.items()
        }
        routes.append((re.compile(regex), guarded))
    return tuple(routes)


# Our replacements of package handlers, guarded as the handler they wrap.
_UNPATCHED = {_download_with_generation: gcs_objects.download}
_ROUTES = _routes()


class _RequestHandler(gcs_server.RequestHandler):
    """The package's request handler, dispatching through the guarded route table."""

    def _dispatch(self, method: str) -> None:
        method = self.headers.get("x-http-method-override") or method
        request = gcs_server.Request(self, method)
        response = gcs_server.Response(self)
        handler = None
        for regex, handlers in _ROUTES:
            match = regex.fullmatch(request.path)
            if match:
                request.set_match(match)
                handler = handlers.get(method)
                break
        if handler is None:
            log.warning("not implemented: %s %s", method, request.path)
            response.status = HTTPStatus.NOT_IMPLEMENTED
        else:
            try:
                handler(request, response, self.storage)
            except Exception:
                # The package drops the connection here; a 500 is what GCS clients retry on.
                log.exception("handler failed: %s %s", method, request.full_url)
                response = gcs_server.Response(self)
                _error(response, HTTPStatus.INTERNAL_SERVER_ERROR, "backendError", "internal error")
        response.close()

    def do_GET(self):
        self._dispatch("GET")

    def do_POST(self):
        self._dispatch("POST")

    def do_PUT(self):
        self._dispatch("PUT")

    def do_PATCH(self):
        self._dispatch("PATCH")

    def do_DELETE(self):
        self._dispatch("DELETE")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # Eight client threads opening a connection per request overflow the default backlog of 5.
    request_queue_size = 128


def serve(host: str, port: int, data_dir: str | None = None, flush_interval: float = 0.25) -> None:
    """Serve until SIGTERM or SIGINT, then flush metadata (disk mode) and return."""
    if data_dir:
        storage = EmulatorStorage(use_memory_fs=False, data_dir=os.path.abspath(data_dir))
    else:
        storage = EmulatorStorage(use_memory_fs=True, data_dir=os.path.abspath(os.sep))
    httpd = _Server((host, port), partial(_RequestHandler, storage))
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    threading.Thread(target=httpd.serve_forever, name="gcs-http", daemon=True).start()
    where = f"data dir {os.path.abspath(data_dir)}" if data_dir else "in memory"
    log.info("GCS emulator ready on http://%s:%d (%s)", host, httpd.server_port, where)
    wait = flush_interval
    while not stop.wait(wait):
        started = time.monotonic()
        storage.flush()
        # A flush costs O(objects) under the lock: keep it below ~20% of the time.
        wait = max(flush_interval, 4 * (time.monotonic() - started))
    log.info("GCS emulator stopping")
    httpd.shutdown()
    # Requests already being handled may still change objects; close() waits for them (the
    # lock) and refuses later ones, so no acknowledged write is missing after a restart.
    storage.close()
    httpd.server_close()
    log.info("GCS emulator stopped")


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point: `python -m devstack.emulators.gcs --host H --port P`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--data-dir", help="keep data here (default: in memory)")
    parser.add_argument("--verbose", action="store_true", help="log every request")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:
        # The package logs every request, and warns on every health check.
        for name in ("gcp_storage_emulator", "api.object", "api.bucket"):
            logging.getLogger(name).setLevel(logging.ERROR)
    serve(args.host, args.port, args.data_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
