"""One-click backup of the store to a Hugging Face Hub dataset repository.

Spaces disks are ephemeral: the annotators' work lives in the SQLite file and the data folder, so
the app can push a consistent copy to a (private) dataset repo. The copy is staged first:

* ``store.sqlite``: a snapshot taken with SQLite's online backup API (consistent even while
  annotators keep saving; the live file and its WAL are never uploaded half-written);
* ``images/`` and ``models/`` (fine-tuned checkpoints): hard links to the content-addressed files
  (copies where links are impossible), which the Hub deduplicates across backups;
* ``README.md``: what the folder is and how to restore it.

Restore: download the repo into a folder and start the app on it
(``huggingface-cli download REPO --repo-type dataset --local-dir sbanet-data``). The token comes
from ``$HF_TOKEN``; the app never asks for it in the browser.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sbanet.checkpoint import HUB_ID

from ..store.database import SQLITE_FILE, Store

TOKEN_ENV = "HF_TOKEN"
BACKED_UP_FOLDERS = ("images", "models")
README = """# sbanet annotation store backup

Made by the sbanet app on {when} (UTC). `store.sqlite` is the annotation database (images,
expressions, every mask version with its author and review history, model versions, fine-tune
runs); `images/` holds the image files it refers to, `models/` the fine-tuned checkpoints.

Restore into a data folder and start the app on it:

    huggingface-cli download {repo} --repo-type dataset --local-dir sbanet-data
    python app.py --data-dir sbanet-data
"""


def _link_tree(source: Path, target: Path) -> int:
    """Mirror ``source`` into ``target`` with hard links (copies across filesystems); file count."""
    count = 0
    for path in sorted(source.rglob("*")):
        if not path.is_file() or path.name.startswith("."):  # skip temporary files being written
            continue
        destination = target / path.relative_to(source)
        destination.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(path, destination)
        except OSError:
            shutil.copy2(path, destination)
        count += 1
    return count


def stage_backup(store: Store, folder: Path, repo_id: str) -> dict[str, int]:
    """Write the backup of ``store`` into the empty ``folder``; returns what it holds."""
    url = store.engine.url
    if url.get_backend_name() != "sqlite" or not url.database:
        raise ValueError(
            "the Hub backup copies the SQLite database; this store runs on "
            f"{url.get_backend_name()}: back it up with that server's tools (e.g. pg_dump)"
        )
    source = sqlite3.connect(f"file:{url.database}?mode=ro", uri=True)
    target = sqlite3.connect(folder / SQLITE_FILE)
    try:
        with target:
            source.backup(target)
    finally:
        source.close()
        target.close()
    counts = {"database": 1}
    for name in BACKED_UP_FOLDERS:
        if (store.data_dir / name).is_dir():
            counts[name] = _link_tree(store.data_dir / name, folder / name)
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S")
    (folder / "README.md").write_text(README.format(when=when, repo=repo_id))
    return counts


def backup_to_hub(store: Store, repo_id: str, *, token: str | None = None, api: Any | None = None) -> dict[str, Any]:
    """Push a consistent copy of the store to the private dataset repo ``repo_id`` (created if
    needed). Returns the commit URL and what was uploaded."""

    repo_id = (repo_id or "").strip()
    if not HUB_ID.match(repo_id):
        raise ValueError(f"{repo_id!r} is not a Hub repo id like 'user/sbanet-annotations'")
    token = token or os.environ.get(TOKEN_ENV, "").strip() or None
    if api is None:
        if token is None:
            raise ValueError(f"set ${TOKEN_ENV} (a Hugging Face write token) where the app runs to back up to the Hub")
        from huggingface_hub import HfApi

        api = HfApi(token=token)
    with tempfile.TemporaryDirectory(prefix="sbanet-backup-") as tmp:
        counts = stage_backup(store, Path(tmp), repo_id)
        api.create_repo(repo_id, repo_type="dataset", private=True, exist_ok=True)
        commit = api.upload_folder(
            repo_id=repo_id,
            repo_type="dataset",
            folder_path=tmp,
            commit_message=f"sbanet store backup ({sum(counts.values())} files)",
        )
    return {"repo": repo_id, "commit": getattr(commit, "commit_url", str(commit)), "files": counts}
