"""The simulated object storage: presigned links to one real MP4.

Novita answers a finished task with a presigned storage URL (an S3-style link
that expires ``video_url_ttl`` seconds after the answer), not an API URL. The
simulator signs ``/storage/<task_id>.mp4?expires=<unix>&signature=<hmac>`` with a
per-instance secret and, like S3, answers 403 with an XML ``AccessDenied`` body
once the link has expired or when its signature is wrong.

Every link serves the same small clip, ``assets/clip.mp4``, made once with
Debian's ffmpeg 5.1 (H.264 constrained baseline, yuv420p, moov first, so a
browser's ``<video>`` plays it)::

    ffmpeg -f lavfi -i testsrc=size=320x180:rate=25 -t 6 -pix_fmt yuv420p \\
        -c:v libx264 -profile:v baseline -crf 35 -movflags +faststart \\
        -map_metadata -1 -fflags +bitexact clip.mp4
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import math
import secrets
from functools import cache
from importlib import resources

import attrs

__all__ = ["STORAGE_PREFIX", "LinkCheck", "Presigner", "clip_bytes", "s3_error_body"]

#: Path under which the simulator serves its storage.
STORAGE_PREFIX = "/storage/"


@cache
def clip_bytes() -> bytes:
    """The bytes every video link serves (read once, shared by all instances)."""
    return resources.files(__package__).joinpath("assets", "clip.mp4").read_bytes()


class LinkCheck(enum.Enum):
    """What a presigned link is worth at a given moment."""

    VALID = "valid"
    EXPIRED = "expired"
    BAD_SIGNATURE = "bad signature"


@attrs.frozen
class Presigner:
    """Signs and checks storage links with a secret only this simulator knows."""

    secret: bytes = attrs.field(factory=lambda: secrets.token_bytes(32), repr=False)

    def _signature(self, task_id: str, expires: int) -> str:
        message = f"{task_id}\n{expires}".encode()
        return hmac.new(self.secret, message, hashlib.sha256).hexdigest()

    def path_and_query(self, task_id: str, *, wall: float, ttl: int) -> str:
        """A fresh link for ``task_id`` valid until ``wall + ttl`` (Unix seconds)."""
        # ceil: the link never expires before the ttl the answer promises.
        expires = math.ceil(wall + ttl)
        signature = self._signature(task_id, expires)
        return f"{STORAGE_PREFIX}{task_id}.mp4?expires={expires}&signature={signature}"

    def expired_path_and_query(self, task_id: str, *, wall: float) -> str:
        """A correctly signed link that expired before ``wall`` (chaos: a stale link)."""
        expires = math.floor(wall) - 1
        signature = self._signature(task_id, expires)
        return f"{STORAGE_PREFIX}{task_id}.mp4?expires={expires}&signature={signature}"

    def check(self, task_id: str, expires: str, signature: str, *, wall: float) -> LinkCheck:
        """Judge a link: a forged or mangled one fails before an expired one."""
        try:
            expiry = int(expires)
        except ValueError:
            return LinkCheck.BAD_SIGNATURE
        if not hmac.compare_digest(self._signature(task_id, expiry), signature):
            return LinkCheck.BAD_SIGNATURE
        if wall > expiry:
            return LinkCheck.EXPIRED
        return LinkCheck.VALID


def s3_error_body(code: str, message: str) -> str:
    """An S3-style XML error document, as real presigned storage answers."""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{message}</Message></Error>\n"
    )
