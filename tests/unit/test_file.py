"""The file decider: given(events).when(command).then(events); and name sanitizing."""

from __future__ import annotations

import pytest

from domain.errors import DomainError, Forbidden, NotFound
from domain.file import (
    FILE,
    MAX_NAME_BYTES,
    Delete,
    FileBlobsRemoved,
    FileDeleted,
    FileShared,
    FileUnshared,
    FileUploaded,
    RemoveBlobs,
    Share,
    Thumbnail,
    Unshare,
    Upload,
    clean_name,
)
from tests.unit.given import given

THUMB = Thumbnail(px=360, key="w1/f1/thumb-360", width=360, height=270, mime="image/jpeg", size=9000)
UPLOADED = FileUploaded(
    file_id="f1",
    workspace_id="w1",
    uploader_id="ada",
    name="cat.jpg",
    size=10,
    mime="image/jpeg",
    sha256="ab" * 32,
    storage_key="w1/f1/original",
    thumbnails=[THUMB],
)
SHARED = FileShared(file_id="f1", workspace_id="w1", channel_id="c1", message_id="m1", shared_by="ada")


def upload(**extra) -> Upload:
    return Upload(
        **{
            "file_id": "f1",
            "workspace_id": "w1",
            "uploader_id": "ada",
            "name": "cat.jpg",
            "size": 10,
            "mime": "image/jpeg",
            "sha256": "ab" * 32,
            "storage_key": "w1/f1/original",
            "thumbnails": (THUMB,),
            **extra,
        }
    )


def share(actor: str = "ada", **extra) -> Share:
    return Share(**{"actor_id": actor, "workspace_id": "w1", "channel_id": "c1", "message_id": "m1", **extra})


def test_upload_records_the_file_with_a_clean_name() -> None:
    given(FILE).when(upload(name="../x/\u202ecat\x00.jpg")).then(
        FileUploaded(**{**{f: getattr(UPLOADED, f) for f in UPLOADED.__struct_fields__}, "name": "cat.jpg"})
    )


def test_upload_refuses_an_empty_file_and_a_taken_id() -> None:
    given(FILE).when(upload(size=0)).then_rejects(DomainError, field="file")
    given(FILE, UPLOADED).when(upload()).then_rejects(DomainError)


def test_the_uploader_shares_once_per_message() -> None:
    given(FILE, UPLOADED).when(share()).then(SHARED)
    given(FILE, UPLOADED, SHARED).when(share()).then()


def test_someone_elses_file_is_403_if_they_see_it_else_404() -> None:
    given(FILE, UPLOADED, SHARED).when(share("bob", actor_sees_file=True)).then_rejects(Forbidden, field="file_ids")
    given(FILE, UPLOADED).when(share("bob")).then_rejects(NotFound, field="file_ids")


def test_a_file_of_another_workspace_or_deleted_or_missing_cannot_be_shared() -> None:
    given(FILE, UPLOADED).when(share(workspace_id="w2")).then_rejects(NotFound, field="file_ids")
    given(FILE, UPLOADED, FileDeleted(file_id="f1", workspace_id="w1", deleted_by="ada")).when(share()).then_rejects(
        NotFound
    )
    given(FILE).when(share()).then_rejects(NotFound)


def test_deleting_the_message_unshares() -> None:
    given(FILE, UPLOADED, SHARED).when(Unshare(message_id="m1")).then(
        FileUnshared(file_id="f1", channel_id="c1", message_id="m1")
    )
    given(FILE, UPLOADED).when(Unshare(message_id="m1")).then()


def test_delete_by_uploader_or_admin_who_sees_it() -> None:
    deleted = FileDeleted(file_id="f1", workspace_id="w1", deleted_by="ada")
    given(FILE, UPLOADED).when(Delete(actor_id="ada")).then(deleted)
    given(FILE, UPLOADED, SHARED).when(Delete(actor_id="boss", actor_is_admin=True, actor_sees_file=True)).then(
        FileDeleted(file_id="f1", workspace_id="w1", deleted_by="boss", channel_ids=("c1",))
    )
    given(FILE, UPLOADED, SHARED).when(Delete(actor_id="bob", actor_sees_file=True)).then_rejects(Forbidden)
    given(FILE, UPLOADED).when(Delete(actor_id="boss", actor_is_admin=True)).then_rejects(NotFound)
    given(FILE, UPLOADED, deleted).when(Delete(actor_id="ada")).then()


def test_a_deletion_names_each_channel_whose_live_messages_list_the_file_once() -> None:
    in_c1_again = FileShared(file_id="f1", workspace_id="w1", channel_id="c1", message_id="m2", shared_by="ada")
    in_c2 = FileShared(file_id="f1", workspace_id="w1", channel_id="c2", message_id="m3", shared_by="ada")
    unshared = FileUnshared(file_id="f1", channel_id="c2", message_id="m3")
    given(FILE, UPLOADED, SHARED, in_c1_again, in_c2).when(Delete(actor_id="ada")).then(
        FileDeleted(file_id="f1", workspace_id="w1", deleted_by="ada", channel_ids=("c1", "c2"))
    )
    given(FILE, UPLOADED, SHARED, in_c2, unshared).when(Delete(actor_id="ada")).then(
        FileDeleted(file_id="f1", workspace_id="w1", deleted_by="ada", channel_ids=("c1",))
    )


def test_blobs_are_removed_once_after_deletion() -> None:
    deleted = FileDeleted(file_id="f1", workspace_id="w1", deleted_by="ada")
    removed = FileBlobsRemoved(file_id="f1", keys=["w1/f1/original", "w1/f1/thumb-360"])
    given(FILE, UPLOADED).when(RemoveBlobs()).then()
    given(FILE, UPLOADED, deleted).when(RemoveBlobs()).then(removed)
    given(FILE, UPLOADED, deleted, removed).when(RemoveBlobs()).then()


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("report.pdf", "report.pdf"),
        ("../../etc/passwd", "passwd"),
        ("C:\\Users\\ada\\evil.exe", "evil.exe"),
        ("a\x00b\r\n\tc.txt", "abc.txt"),
        ("invoice\u202egnp.exe", "invoicegnp.exe"),  # a right-to-left override hides the real extension
        ("  many   spaces  .txt", "many spaces .txt"),
        ("trailing dots...", "trailing dots"),
        (".bashrc", ".bashrc"),
        ("..", "file"),
        ("/", "file"),
        ("", "file"),
        (None, "file"),
        ("cafe\u0301.txt", "caf\u00e9.txt"),  # NFC
    ],
)
def test_names_are_cleaned(raw: str | None, clean: str) -> None:
    assert clean_name(raw) == clean


def test_long_names_keep_their_extension_within_255_bytes() -> None:
    name = clean_name("\u00e9" * 300 + ".tar.gz")
    assert len(name.encode()) <= MAX_NAME_BYTES and name.endswith(".gz")
    assert clean_name("x" * 300) == "x" * MAX_NAME_BYTES
