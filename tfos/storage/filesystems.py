"""A storage URI -> a ``pyarrow.fs`` file system and the path inside it.

TensorFlow 2.21 lost ``hdfs://`` and ``s3://`` (tensorflow-io no longer loads against it),
so tfos reaches cluster storage through ``pyarrow.fs``, which has native clients for
every scheme Spark users keep data in:

=============================  ==================================================
``/p``, ``file:///p``          local disk (``LocalFileSystem``)
``s3://b/k``, ``s3a://``,      S3 or an S3-API server (``S3FileSystem``)
``s3n://``
``gs://b/k``, ``gcs://``       Google Cloud Storage (``GcsFileSystem``)
``hdfs://nn:8020/p``,          HDFS through libhdfs and a JVM (``HadoopFileSystem``), as
``viewfs://c/p``               on every Hadoop node
``abfs[s]://c@acct.dfs.core.   Azure Data Lake Storage Gen2 / Blob (``AzureFileSystem``)
windows.net/p``
=============================  ==================================================

Credentials come from where each SDK already looks (``AWS_ACCESS_KEY_ID`` /
``~/.aws/credentials`` / instance roles; ``GOOGLE_APPLICATION_CREDENTIALS``;
``AZURE_STORAGE_ACCOUNT_KEY`` or Azure's default credential chain; Kerberos tickets and
``HADOOP_TOKEN_FILE_LOCATION`` for HDFS). An S3-API endpoint other than AWS comes from
``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL`` (the AWS SDKs' own variables). Nothing
here logs or raises a URI without :func:`redact`.
"""

from __future__ import annotations

import os
import re
import threading
from dataclasses import dataclass
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from tfos.errors import StorageError

#: schemes pyarrow names differently
_ALIASES = {"s3a": "s3", "s3n": "s3", "gcs": "gs"}
_SUPPORTED = ("file", "s3", "gs", "hdfs", "viewfs", "abfs", "abfss")
#: query parameters that carry secrets (pyarrow accepts credentials in the S3 URI's query)
_SECRET_PARAMS = re.compile(r"(key|secret|token|password|credential|sig)", re.I)

_cache: dict[tuple, object] = {}
_cache_lock = threading.Lock()


@dataclass(frozen=True)
class Location:
    """Where a URI points: the file system, the path inside it, and how to name it again."""

    fs: object
    path: str
    #: ``scheme://authority`` prefix that turns a ``path`` of ``fs`` back into a URI ("" for local)
    root: str
    #: for fsspec file systems: their own path -> URI (``fs.unstrip_protocol``)
    unstrip: object = None

    def uri(self, path: str | None = None) -> str:
        """The URI of ``path`` (default: this location's own) on the same file system."""
        path = self.path if path is None else path
        if self.unstrip is not None:
            return self.unstrip(path)
        if not self.root:
            return path
        separator = "" if self.root.endswith("://") else "/"
        return f"{self.root}{separator}{path.lstrip('/')}"

    @property
    def is_local(self) -> bool:
        return not self.root


def scheme_of(uri: str) -> str:
    """The URI's scheme, aliases resolved ("" for a plain local path)."""
    match = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*):", uri)
    if not match or len(match.group(1)) == 1:  # "C:" is a drive, not a scheme
        return ""
    scheme = match.group(1).lower()
    return _ALIASES.get(scheme, scheme)


def is_remote(uri: str) -> bool:
    """True for URIs tfos reaches through pyarrow (anything but a local path or ``file:``)."""
    return scheme_of(uri) not in ("", "file")


def resolve(uri: str, environ=None) -> Location:
    """The file system and path for ``uri``; file systems are made once per authority.

    ``environ`` is where the AWS variables are read (endpoint, region, keys); by default the
    process's environment with the active Spark session's storage settings where it has
    none (:func:`tfos.storage.credentials.storage_environ`: on the driver, ``spark.hadoop.fs.s3a.*``
    work as they do for Spark). Pass the process environment plus extra settings to use
    those without changing the process's own.

    Raises:
        StorageError: an unsupported scheme, or a file system that cannot be set up here
            (no libhdfs or JVM for ``hdfs://``, a bad endpoint); the message says what to set.
    """
    if not isinstance(uri, str) or not uri:
        raise StorageError(f"a storage location must be a non-empty URI or path; received: {uri!r}")
    scheme = scheme_of(uri)
    if scheme in ("", "file"):
        import pyarrow.fs as pafs

        return Location(pafs.LocalFileSystem(), os.path.abspath(_local_path(uri)), "")
    if environ is None:
        from tfos.storage.credentials import storage_environ

        environ = storage_environ()
    if scheme not in _SUPPORTED or scheme in _fsspec_schemes(environ):
        return _through_fsspec(scheme, uri)
    parts = urlsplit(uri)
    key = (scheme, parts.netloc, parts.query, _environment_key(environ))
    with _cache_lock:
        fs = _cache.get(key)
        if fs is None:
            fs = _cache[key] = _make(scheme, uri, parts, environ)
    root, path = _split(scheme, parts)
    return Location(fs, path, root)


def glob(pattern: str) -> list[str]:
    """The files matching a glob ``pattern`` on any supported file system, sorted, as URIs.

    ``*``, ``?`` and ``[...]`` match within one path segment, ``**`` across segments.
    Local patterns (no scheme, ``file:``) give plain local paths back.

    Raises:
        StorageError: the file system cannot be reached or listed (the message names the
            pattern, credentials redacted, and what to check).
    """
    import pyarrow.fs as pafs

    location = resolve(pattern)
    path = location.path
    magic = re.search(r"[*?\[]", path)
    if magic is None:
        try:
            info = location.fs.get_file_info(path)
        except (OSError, ValueError) as exc:
            raise storage_error("list", pattern, exc) from None
        return [location.uri(path)] if info.type == pafs.FileType.File else []
    base = path[: magic.start()].rsplit("/", 1)[0]
    rest = path[len(base):].lstrip("/")
    matcher = re.compile(_glob_regex(rest))
    try:
        infos = location.fs.get_file_info(
            pafs.FileSelector(base or "/", recursive="/" in rest or "**" in rest, allow_not_found=True))
    except (OSError, ValueError) as exc:
        raise storage_error("list", pattern, exc) from None
    prefix = base.rstrip("/") + "/" if base else ""
    found = [info.path for info in infos if info.type == pafs.FileType.File
             and matcher.fullmatch(info.path[len(prefix):] if info.path.startswith(prefix) else info.path)]
    return sorted(location.uri(p) for p in found)


def check_writable(uri: str, environ=None) -> None:
    """Write and delete a small probe file under ``uri``: a run with ``storage=`` fails at
    the start, not after hours of training, when it could not save.

    Raises:
        StorageError: naming the URI and what to set (credentials, bucket, endpoint, libhdfs).
    """
    import secrets

    location = resolve(uri, environ)
    probe = f"{location.path.rstrip('/')}/.tfos-probe-{secrets.token_hex(4)}"
    try:
        location.fs.create_dir(location.path, recursive=True)
        with location.fs.open_output_stream(probe) as out:
            out.write(b"tfos")
        location.fs.delete_file(probe)
    except (OSError, ValueError) as exc:
        raise storage_error("write to", uri, exc) from None


#: bytes per read when copying between storage and local disk
COPY_CHUNK = 8 << 20


def download(uri: str, local: str, fs=None, path: str | None = None) -> None:
    """Copy the file at ``uri`` to ``local``, whole or not at all (``local.part``, then renamed).

    ``fs`` and ``path``: the file system and path already resolved (``uri`` then only names
    the file in errors). Reads through ``open_input_file`` (ranged reads): an S3 input
    stream is ~80x slower here.

    Raises:
        StorageError: the file cannot be read (named).
    """
    if fs is None:
        location = resolve(uri)
        fs, path = location.fs, location.path
    partial = local + ".part"
    try:
        with fs.open_input_file(path) as src, open(partial, "wb") as dst:
            while True:
                chunk = src.read(COPY_CHUNK)
                if not chunk:
                    break
                dst.write(chunk)
        os.replace(partial, local)
    except (OSError, ValueError) as exc:
        try:
            os.remove(partial)
        except OSError:
            pass
        raise storage_error("read", uri, exc) from None


def read_bytes(uri: str) -> bytes:
    """The whole file at ``uri``.

    Raises:
        FileNotFoundError: there is no such file.
        StorageError: it cannot be read (named).
    """
    location = resolve(uri)
    try:
        with location.fs.open_input_file(location.path) as f:
            return f.read()
    except FileNotFoundError:
        raise
    except (OSError, ValueError) as exc:
        raise storage_error("read", uri, exc) from None


def local_path(uri: str) -> str | None:
    """The local path a ``file:`` URI or plain path names; ``None`` for remote URIs."""
    return None if is_remote(uri) else _local_path(uri)


#: schemes to serve through fsspec even where pyarrow has a native client, e.g. "hdfs,viewfs"
#: with the ``hdfs-native`` package (a JVM-free HDFS client): ``pip install tfos[hdfs-native]``
FSSPEC_SCHEMES_VARIABLE = "TFOS_FSSPEC_SCHEMES"


def _fsspec_schemes(environ) -> set[str]:
    return {s.strip().lower() for s in (environ.get(FSSPEC_SCHEMES_VARIABLE) or "").split(",") if s.strip()}


def _through_fsspec(scheme: str, uri: str) -> Location:
    """Any fsspec file system (``hdfs-native``'s ``hdfs://``, ``webhdfs://``, ``oss://``...)
    behind pyarrow's interface, so every caller keeps one code path."""
    try:
        import fsspec
    except ImportError:
        fsspec = None
    known = fsspec is not None and (scheme in fsspec.available_protocols())
    if not known:
        hint = "" if fsspec is not None else " (or install fsspec and a package that implements it)"
        raise StorageError(
            f"unsupported storage scheme {scheme!r} in {redact(uri)}: tfos reads and writes "
            f"{', '.join(s + '://' for s in _SUPPORTED)} (and s3a://, s3n://, gcs://){hint}"
        )
    import pyarrow.fs as pafs

    key = ("fsspec", scheme, urlsplit(uri).netloc)
    try:
        with _cache_lock:
            entry = _cache.get(key)
            if entry is None:
                fs, _ = fsspec.core.url_to_fs(uri)
                entry = _cache[key] = (fs, pafs.PyFileSystem(pafs.FSSpecHandler(fs)))
        fs, wrapped = entry
        path = fs._strip_protocol(uri)
    except (ImportError, OSError, ValueError) as exc:
        raise storage_error("open the file system of", uri, exc) from None
    return Location(wrapped, path, f"{scheme}://", unstrip=fs.unstrip_protocol)


def redact(uri: str) -> str:
    """``uri`` without user info and without secret-looking query values, for messages."""
    if not isinstance(uri, str) or "://" not in uri:
        return str(uri)
    scheme, _, rest = uri.partition("://")
    user = _user_info(uri)
    if user:
        rest = "***" + rest[len(user):]
    head, sep, tail = rest.partition("?")
    if sep:
        query = urlencode([(k, "***" if _SECRET_PARAMS.search(k) else v) for k, v in parse_qsl(tail)])
        head = f"{head}?{query}"
    return f"{scheme}://{head}"


def _user_info(uri: str) -> str:
    """What precedes the last "@" before any "?" (bucket and host names hold none); abfs's
    "container@account" is an address, not a secret. Found even when an unencoded "/"
    in a secret breaks the URI's parsing."""
    if scheme_of(uri) in ("abfs", "abfss", "", "file"):
        return ""
    rest = uri.partition("://")[2].partition("?")[0]
    return rest.rsplit("@", 1)[0] if "@" in rest else ""


def storage_error(action: str, uri: str, exc: BaseException) -> StorageError:
    """A :class:`StorageError` for ``action`` on ``uri`` that says what to check."""
    text = str(exc)
    for secret in _secrets_in(uri):
        text = text.replace(secret, "***")
    scheme = scheme_of(uri)
    hint = ""
    lowered = text.lower()
    if scheme == "s3" and any(w in lowered for w in ("access denied", "accessdenied", "signature", "invalidaccesskey",
                                                      "forbidden", "403")):
        hint = ("; check the credentials (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE or "
                "~/.aws/credentials) and the bucket policy")
    elif scheme == "s3" and ("nosuchbucket" in lowered or "bucket" in lowered and "not found" in lowered):
        hint = "; the bucket does not exist: create it first"
    elif scheme == "s3" and ("resolve host" in lowered or "connect" in lowered):
        hint = ("; the endpoint cannot be reached: for an S3-API server other than AWS set AWS_ENDPOINT_URL "
                "(e.g. http://minio:9000)")
    elif scheme in ("hdfs", "viewfs") and ("libjvm" in lowered or "libhdfs" in lowered):
        hint = ("; hdfs:// needs libhdfs and a JVM on this host: set JAVA_HOME, HADOOP_HOME (or "
                "ARROW_LIBHDFS_DIR) and CLASSPATH=$(hadoop classpath --glob), e.g. with tfos submit --hdfs")
    return StorageError(f"cannot {action} {redact(uri)}: {text}{hint}")


# ----------------------------------------------------------------------------- internals


def _make(scheme: str, uri: str, parts, environ):
    import pyarrow.fs as pafs

    try:
        if scheme == "s3":
            return _s3(parts, environ)
        if scheme in ("hdfs", "viewfs"):
            return pafs.HadoopFileSystem.from_uri(urlunsplit((scheme, parts.netloc, "", parts.query, "")))
        fs, _ = pafs.FileSystem.from_uri(_pyarrow_uri(scheme, uri))
        return fs
    except (OSError, ValueError, TypeError) as exc:
        raise storage_error("open the file system of", uri, exc) from None


def _s3(parts, environ):
    import pyarrow.fs as pafs

    options = dict(parse_qsl(parts.query))
    endpoint = options.pop("endpoint_override", None) or _endpoint(environ)
    kwargs = {}
    if endpoint:
        if "://" in endpoint:
            scheme, _, host = endpoint.partition("://")
            kwargs["scheme"] = scheme
            endpoint = host.rstrip("/")
        kwargs["endpoint_override"] = endpoint
    if "scheme" in options:
        kwargs["scheme"] = options.pop("scheme")
    region = options.pop("region", None) or environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION")
    if environ is not os.environ and environ.get("AWS_ACCESS_KEY_ID"):
        # keys the SDK would not find in the process environment: hand them over
        kwargs.update(access_key=environ["AWS_ACCESS_KEY_ID"], secret_key=environ.get("AWS_SECRET_ACCESS_KEY", ""))
        if environ.get("AWS_SESSION_TOKEN"):
            kwargs["session_token"] = environ["AWS_SESSION_TOKEN"]
    if region:
        kwargs["region"] = region
    for name in ("access_key", "secret_key", "session_token"):
        if name in options:
            kwargs[name] = options.pop(name)
    if "@" in parts.netloc:  # s3://ACCESS:SECRET@bucket/...
        user = parts.netloc.rsplit("@", 1)[0]
        access, _, secret = user.partition(":")  # percent-encoded, as in any URI
        kwargs.update(access_key=unquote(access), secret_key=unquote(secret))
    return pafs.S3FileSystem(**kwargs)


#: environment the SDKs read credentials and endpoints from: a change makes a new file system
_ENVIRONMENT = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
                "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_REGION", "AWS_DEFAULT_REGION",
                "GOOGLE_APPLICATION_CREDENTIALS", "AZURE_STORAGE_ACCOUNT_KEY", "HADOOP_TOKEN_FILE_LOCATION")


def _environment_key(environ) -> int:
    return hash(tuple(environ.get(name) for name in _ENVIRONMENT))


def _endpoint(environ) -> str:
    return environ.get("AWS_ENDPOINT_URL_S3") or environ.get("AWS_ENDPOINT_URL") or ""


def _split(scheme: str, parts) -> tuple[str, str]:
    """``(root, path)``: how pyarrow's file system names the URI's object, and the prefix back."""
    host = parts.netloc.rsplit("@", 1)[-1] if scheme == "s3" else parts.netloc
    if scheme in ("s3", "gs"):
        return f"{scheme}://", f"{host}{parts.path}".rstrip("/") or host
    if scheme in ("abfs", "abfss"):
        container = parts.netloc.split("@", 1)[0]
        return f"{scheme}://{parts.netloc}", f"{container}{parts.path}".rstrip("/")
    # hdfs/viewfs: the file system is per name node, paths are absolute in it
    return f"{scheme}://{parts.netloc}", parts.path or "/"


def _pyarrow_uri(scheme: str, uri: str) -> str:
    parts = urlsplit(uri)
    return urlunsplit((scheme, parts.netloc, parts.path, parts.query, ""))


def _local_path(uri: str) -> str:
    """``file:///a/b``, ``file://localhost/a/b``, ``file:/a/b`` -> ``/a/b``; plain paths unchanged."""
    if uri.startswith("file:"):
        rest = uri[len("file:"):]
        if rest.startswith("//"):
            rest = rest[2:]
            # file://host/path: only the local host can be meant
            if not rest.startswith("/"):
                rest = "/" + rest.split("/", 1)[1] if "/" in rest else "/"
        return rest
    return uri


def _glob_regex(pattern: str) -> str:
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            end = pattern.find("]", i + 1)
            if end < 0:
                out.append(re.escape(c))
            else:
                body = pattern[i + 1:end]
                out.append("[" + ("^" + body[1:] if body.startswith("!") else body) + "]")
                i = end
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out)


def _secrets_in(uri: str) -> list[str]:
    if not isinstance(uri, str) or "://" not in uri:
        return []
    found = [v for k, v in parse_qsl(uri.partition("?")[2]) if _SECRET_PARAMS.search(k) and v]
    user = _user_info(uri)
    if user:
        found += [user, *(s for s in user.split(":") if s)]
    return sorted({form for secret in found for form in (secret, unquote(secret))}, key=len, reverse=True)
