"""Official models from the Hugging Face Hub, by repo id: ``jaxvoc convert bigvgan nvidia/NAME OUT``,
``jaxvoc.load("nvidia/NAME")`` (and every command that loads a checkpoint), ``jaxvoc compare bigvgan nvidia/NAME``.

A source is a Hub repo id when no file or folder of that name exists and it reads ``owner/name``, optionally
``owner/name@revision`` (a branch, tag or commit; ``--revision`` / ``revision=`` say the same).

* Only the files a model kind needs are fetched (``jaxvoc/registry.py``: ``Family.hub_files``; BigVGAN's
  discriminator/optimizer file only with ``--with-discriminator``), through ``huggingface_hub`` into its own
  cache (``HF_HUB_CACHE``), each verified against the sha256 the Hub names its blob by.
* The converted checkpoint is cached under ``$JAXVOC_CACHE`` (default ``~/.cache/jaxvoc``) at
  ``hub/models--OWNER--NAME/COMMIT`` (``COMMIT+training`` with the discriminator trees): keyed by the commit
  the revision resolved to, never by a branch name, and written atomically (a killed conversion leaves no
  entry). A later load of the same commit reads it without converting again.
* Its ``jaxvoc.json`` carries the provenance under ``source``: repo, revision asked, commit resolved, and
  name, size and sha256 of every source file.
* ``HF_HUB_OFFLINE=1``: nothing is asked of the network; the revision resolves through the local Hugging
  Face cache (or the revisions jaxvoc's cache remembers) and a miss is one line naming the repo and the fix.

Pure Python: the conversion itself is reached through ``jaxvoc.registry.convert_with`` (conversion/, imported
on first use), so loading a cached model needs neither torch nor the official packages.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import errno
import fnmatch
import hashlib
import os
import re
import shutil
import tempfile
from typing import Iterator

from jaxvoc.errors import UserError

_NAME = r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?"
REPO_ID = re.compile(rf"^(?P<repo>{_NAME}/{_NAME})(?:@(?P<revision>[A-Za-z0-9][A-Za-z0-9._/-]*))?$")
COMMIT = re.compile(r"^[0-9a-f]{40}$")
SHA256 = re.compile(r"^[0-9a-f]{64}$")
TRAINING_SUFFIX = "+training"
INSTALL = "install it with `pip install 'jaxvoc[hub]'`"


@dataclasses.dataclass(frozen=True)
class Snapshot:
    repo: str
    revision: str  # as asked (default "main")
    commit: str  # what it resolved to
    files: tuple[str, ...]  # top-level files of the repo at that commit (offline: those in the local cache)
    online: bool


@dataclasses.dataclass(frozen=True)
class HubCheckpoint:
    path: str  # the converted checkpoint in jaxvoc's cache
    kind: str
    snapshot: Snapshot
    converted: bool  # False: read from jaxvoc's cache


# ----------------------------------------------------------------------------------------------------------
# Names, places, modes


def parse(src: str, revision: str | None = None) -> tuple[str, str] | None:
    """(repo, revision) when ``src`` is a Hub repo id (and no local path), else None. ``revision`` (an option)
    and ``@revision`` must agree; the default is ``main``."""
    if not isinstance(src, str) or os.path.exists(src):
        return None
    m = REPO_ID.match(src)
    if m is None or "--" in m["repo"] or ".." in src:
        return None
    rev = m["revision"]
    if rev is not None and revision is not None and rev != revision:
        raise UserError(f"{src} names revision {rev} but --revision says {revision}; give one of them")
    return m["repo"], rev or revision or "main"


def is_repo_id(src: str) -> bool:
    return parse(src) is not None


def offline() -> bool:
    """HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) set, now or when huggingface_hub was imported."""
    import sys

    if any(os.environ.get(k, "").strip().lower() in ("1", "true", "yes", "on")
           for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")):
        return True
    constants = sys.modules.get("huggingface_hub.constants")
    return bool(getattr(constants, "HF_HUB_OFFLINE", False))


def jaxvoc_cache() -> str:
    """$JAXVOC_CACHE, else $XDG_CACHE_HOME/jaxvoc, else ~/.cache/jaxvoc."""
    if os.environ.get("JAXVOC_CACHE"):
        return os.path.abspath(os.path.expanduser(os.environ["JAXVOC_CACHE"]))
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "jaxvoc")


def hf_cache() -> str:
    """The Hugging Face hub cache folder, read at call time (HF_HUB_CACHE, else huggingface_hub's default)."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.path.abspath(os.path.expanduser(os.environ["HF_HUB_CACHE"]))
    return _hf().constants.HF_HUB_CACHE


def repo_folder(repo: str) -> str:
    """Hugging Face's folder name of a model repo (``models--owner--name``), also used in jaxvoc's cache."""
    return "models--" + repo.replace("/", "--")


def entry_dir(repo: str, commit: str, training: bool = False) -> str:
    return os.path.join(jaxvoc_cache(), "hub", repo_folder(repo), commit + (TRAINING_SUFFIX if training else ""))


def _hf(src: str | None = None):
    try:
        import huggingface_hub
    except ImportError:
        what = f"{src} is not a local path, and loading it from the Hugging Face Hub" if src else \
            "loading models from the Hugging Face Hub"
        raise UserError(f"{what} needs huggingface_hub; {INSTALL}") from None
    return huggingface_hub


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:200]


# ----------------------------------------------------------------------------------------------------------
# Resolving a revision, fetching files


def _read_ref(folder: str, revision: str) -> str | None:
    path = os.path.join(folder, "refs", *revision.split("/"))
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        commit = f.read().strip()
    return commit if COMMIT.match(commit) else None


def _remember_ref(repo: str, revision: str, commit: str) -> None:
    """jaxvoc's cache keeps revision -> commit, so that an offline load finds a converted model even when the
    Hugging Face cache was cleared."""
    if revision == commit:
        return
    from jaxvoc.io.atomic import atomic_file

    path = os.path.join(jaxvoc_cache(), "hub", repo_folder(repo), "refs", *revision.split("/"))
    try:
        with atomic_file(path) as tmp, open(tmp, "w") as f:
            f.write(commit)
    except OSError:  # a read-only cache still serves what it has; the ref is a convenience
        pass


def _local_snapshot(repo: str, revision: str, src: str, why: str) -> Snapshot:
    """The revision resolved without the network: a commit hash as given, else the Hugging Face cache's refs,
    else jaxvoc's."""
    hf_folder = os.path.join(hf_cache(), repo_folder(repo))
    commit = revision if COMMIT.match(revision) else (
        _read_ref(hf_folder, revision) or _read_ref(os.path.join(jaxvoc_cache(), "hub", repo_folder(repo)), revision))
    if commit is None:
        raise UserError(f"{repo}@{revision}: {why}, and neither the local Hugging Face cache ({hf_cache()}) nor "
                        f"jaxvoc's ({jaxvoc_cache()}) knows this revision; fetch it once with the network on"
                        f"{' (unset HF_HUB_OFFLINE)' if offline() else ''}, or give a local path "
                        f"(no file or folder {src} exists)")
    snap = os.path.join(hf_folder, "snapshots", commit)
    files = tuple(sorted(os.listdir(snap))) if os.path.isdir(snap) else ()
    return Snapshot(repo, revision, commit, files, online=False)


def resolve(src: str, revision: str | None = None) -> Snapshot:
    """The commit and file list of Hub repo ``src`` at ``revision``: asked of the Hub, or of the local caches
    when offline (HF_HUB_OFFLINE) or when the Hub cannot be reached."""
    parsed = parse(src, revision)
    if parsed is None:
        raise UserError(f"{src} is neither a local path nor a Hugging Face repo id (owner/name[@revision])")
    repo, rev = parsed
    if offline():
        _hf(src)
        return _local_snapshot(repo, rev, src, "HF_HUB_OFFLINE is set")
    hf = _hf(src)
    from huggingface_hub import errors

    try:
        info = hf.HfApi().model_info(repo, revision=rev)
    except errors.RevisionNotFoundError:
        raise UserError(f"{repo} has no revision {rev!r}; give a branch, tag or commit of the repo") from None
    except (errors.RepositoryNotFoundError, errors.GatedRepoError) as e:
        gated = isinstance(e, errors.GatedRepoError)
        raise UserError(f"{src}: " + ("the repo is gated; accept its terms on huggingface.co and log in "
                                      "(hf auth login or HF_TOKEN)" if gated else
                                      "no such local path, and no Hugging Face repo of that name (or it is "
                                      "private: log in with hf auth login or HF_TOKEN); check the name")) from None
    except Exception as e:  # no connection, Hub down: what is cached still serves
        return _local_snapshot(repo, rev, src, f"the Hub cannot be reached ({type(e).__name__}: {_first_line(e)})")
    files = tuple(sorted(s.rfilename for s in (info.siblings or []) if "/" not in s.rfilename))
    _remember_ref(repo, rev, info.sha)
    return Snapshot(repo, rev, info.sha, files, online=True)


def select_files(kind: str, snap: Snapshot, training: bool = False) -> list[str]:
    """The files of ``snap`` that kind ``kind`` needs (registry: ``hub_files``, plus ``hub_training_files``
    when ``training``), or one UserError naming what is missing."""
    from jaxvoc.registry import family

    fam = family(kind)
    if not fam.hub_files:
        raise UserError(f"{kind} models are not loaded from the Hugging Face Hub; download the official file and "
                        f"give its path (README: Get the weights)")
    where = "the Hub" if snap.online else f"the local Hugging Face cache ({hf_cache()})"
    wanted = list(fam.hub_files) + ([(p,) for p in fam.hub_training_files] if training else [])
    out = []
    for alternatives in wanted:
        for pattern in alternatives:
            hits = fnmatch.filter(snap.files, pattern)
            if len(hits) > 1:
                raise UserError(f"{snap.repo}@{snap.revision} has several files matching {pattern} "
                                f"({', '.join(hits[:4])}); jaxvoc cannot tell which is the model")
            if hits:
                out.append(hits[0])
                break
        else:
            fix = ("fetch it once with the network on (unset HF_HUB_OFFLINE)" if not snap.online
                   else "check that the repo holds a " + kind + " model")
            raise UserError(f"{snap.repo}@{snap.revision} (commit {snap.commit[:12]}): no "
                            f"{' or '.join(alternatives)} in {where}; {fix}")
    return out


def sha256_of(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fetch(snap: Snapshot, names: list[str]) -> dict[str, dict]:
    """Each file of ``names`` at ``snap.commit`` in the local Hugging Face cache (downloaded unless offline):
    {name: {'path', 'sha256', 'bytes'}}. A cached blob whose content does not match the sha256 it is named by
    (Git LFS files) is refused."""
    hf = _hf()
    from huggingface_hub import errors

    out = {}
    for name in names:
        try:
            path = hf.hf_hub_download(snap.repo, name, revision=snap.commit, cache_dir=hf_cache(),
                                      local_files_only=not snap.online)
        except errors.LocalEntryNotFoundError:
            raise UserError(f"{snap.repo}@{snap.revision} (commit {snap.commit[:12]}): {name} is not in the local "
                            f"Hugging Face cache ({hf_cache()}); fetch it once with the network on"
                            f"{' (unset HF_HUB_OFFLINE)' if offline() else ''}") from None
        except errors.EntryNotFoundError:
            raise UserError(f"{snap.repo}@{snap.revision} has no file {name}; check the repo id and revision") \
                from None
        except OSError as e:
            if e.errno is not None and not isinstance(e, errors.HfHubHTTPError):
                raise  # the disk (full, not writable): the CLI's one line names the folder
            raise UserError(f"{snap.repo}: downloading {name} failed ({type(e).__name__}: {_first_line(e)}); "
                            "check the connection and run the command again") from None
        except Exception as e:  # connection lost half-way, Hub errors
            raise UserError(f"{snap.repo}: downloading {name} failed ({type(e).__name__}: {_first_line(e)}); "
                            "check the connection and run the command again") from None
        digest = sha256_of(path)
        blob = os.path.realpath(path)
        named = os.path.basename(blob)
        if SHA256.match(named) and named != digest:
            raise UserError(f"{snap.repo}: the cached {name} is damaged (its sha256 is {digest[:16]}…, the Hub's "
                            f"{named[:16]}…); delete {blob} and run the command again")
        out[name] = {"path": path, "sha256": digest, "bytes": os.path.getsize(path)}
    return out


@contextlib.contextmanager
def source_path(kind: str, snap: Snapshot, files: dict[str, dict]) -> Iterator[str]:
    """What the kind's converter reads: the one file, or a private folder holding links to exactly ``files``
    (a Hugging Face snapshot folder may hold other files, e.g. a discriminator file fetched earlier)."""
    if len(files) == 1:
        yield next(iter(files.values()))["path"]
        return
    tmp = tempfile.mkdtemp(prefix=f"jaxvoc-hub-{repo_folder(snap.repo)}-")
    try:
        for name, f in files.items():
            os.symlink(os.path.realpath(f["path"]), os.path.join(tmp, name))
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def official_source(src: str, kind: str, revision: str | None = None) -> Iterator[str]:
    """The official files of Hub repo ``src`` as a local path the kind's converter (and ``compare``) reads."""
    snap = resolve(src, revision)
    with source_path(kind, snap, fetch(snap, select_files(kind, snap))) as path:
        yield path


# ----------------------------------------------------------------------------------------------------------
# Converted checkpoints


def detect_kind(snap: Snapshot) -> str:
    """The one model kind whose needed files the repo holds."""
    from jaxvoc.registry import FAMILIES

    kinds = []
    for kind, fam in FAMILIES.items():
        if fam.hub_files and all(any(fnmatch.filter(snap.files, p) for p in alt) for alt in fam.hub_files):
            kinds.append(kind)
    if len(kinds) == 1:
        return kinds[0]
    shown = ", ".join(snap.files[:8]) or "none"
    if not kinds:
        where = "" if snap.online else f" in the local Hugging Face cache ({hf_cache()})"
        raise UserError(f"{snap.repo}@{snap.revision}: no model jaxvoc knows among its files{where} ({shown}); "
                        "give the model kind (jaxvoc convert KIND ...; jaxvoc.load(..., kind=...))")
    raise UserError(f"{snap.repo} could be a {' or a '.join(kinds)} model; give the kind "
                    "(jaxvoc convert KIND ...; jaxvoc.load(..., kind=...))")


def _cached(repo: str, commit: str, training: bool) -> str | None:
    """A complete converted entry of this commit (with the training trees when ``training``)."""
    from jaxvoc.io.checkpoint import read_meta

    for t in ((True,) if training else (False, True)):
        path = entry_dir(repo, commit, t)
        if os.path.isdir(path):
            try:
                read_meta(path)
            except UserError:  # from an older jaxvoc: converted again
                continue
            return path
    return None


def converted(src: str, revision: str | None = None, kind: str | None = None,
              training: bool = False) -> HubCheckpoint:
    """The converted checkpoint of Hub repo ``src`` at ``revision`` from jaxvoc's cache, converted first when
    missing. ``kind``: the model kind (found from the repo's files when None); ``training``: with the
    discriminator/optimizer trees too (BigVGAN's ``bigvgan_discriminator_optimizer.pt``; a kind without such
    files ignores it)."""
    from jaxvoc import __version__
    from jaxvoc.io.atomic import check_writable_dir
    from jaxvoc.io.checkpoint import read_meta
    from jaxvoc.registry import converter_module, family

    snap = resolve(src, revision)
    seen = _cached(snap.repo, snap.commit, False)  # any entry of this commit tells the kind, else its files
    try:
        found = read_meta(seen)["kind"] if seen else detect_kind(snap)
    except UserError:
        if kind is None:
            raise
        found = kind  # select_files names what is missing
    if kind is not None and found != kind:
        raise UserError(f"{snap.repo} holds a {found} model, not a {kind} model; use jaxvoc convert {found} ...")
    kind = found
    training = training and bool(family(kind).hub_training_files)
    hit = _cached(snap.repo, snap.commit, training)
    if hit is not None:
        return HubCheckpoint(hit, kind, snap, converted=False)
    path = entry_dir(snap.repo, snap.commit, training)
    try:  # before anything is fetched or converted
        check_writable_dir(os.path.dirname(path))
    except OSError as e:
        raise _cache_error(e) from None
    with _needs_conversion(snap, kind):
        converter_module(kind)  # torch and the converter are there, before anything is downloaded
    files = fetch(snap, select_files(kind, snap, training))
    source = {"hub": {"repo": snap.repo, "revision": snap.revision, "commit": snap.commit,
                      "files": {n: {"sha256": f["sha256"], "bytes": f["bytes"]} for n, f in files.items()}},
              "converted": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "converted_by": f"jaxvoc {__version__}"}
    _convert_into(path, kind, snap, files, source)
    _remember_ref(snap.repo, snap.revision, snap.commit)
    return HubCheckpoint(path, kind, snap, converted=True)


@contextlib.contextmanager
def _needs_conversion(snap: Snapshot, kind: str) -> Iterator[None]:
    """A missing official package (torch, ...) as the one line of a model that has to be converted first."""
    from jaxvoc.registry import MissingPackage

    try:
        yield
    except MissingPackage as e:
        raise UserError(f"{snap.repo} (commit {snap.commit[:12]}) is not in jaxvoc's cache ({jaxvoc_cache()}) "
                        f"yet, and converting it needs the official PyTorch packages ({e.name} is missing); "
                        "install them with `pip install 'jaxvoc[conversion]'`, or run "
                        f"`jaxvoc convert {kind} {snap.repo} OUT` where they are and load OUT") from None


def _convert_into(path: str, kind: str, snap: Snapshot, files: dict[str, dict], source: dict) -> None:
    from jaxvoc.io import checkpoint as ck
    from jaxvoc.registry import convert_with

    with source_path(kind, snap, files) as src, _needs_conversion(snap, kind):
        config, params, extra = convert_with(kind, src)
    try:
        ck.save(path, kind, config, params, extra=extra, overwrite=True, source=source)
    except OSError as e:
        raise _cache_error(e) from None


def _cache_error(e: OSError) -> Exception:
    """An OSError writing jaxvoc's cache: a folder that cannot be written is one line naming JAXVOC_CACHE; a full
    disk stays an OSError (the CLI's one line names the folder)."""
    if e.errno not in (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EEXIST):
        return e
    return UserError(f"cannot write jaxvoc's cache ({e.strerror}: {e.filename}); set JAXVOC_CACHE to a writable "
                     "folder")
