"""What a file param (image, video, audio) accepts, checked on the bytes every way in brings.

An upload is refused by name before anything is queued: ``video: not a video file (it holds
an image)``. The declared type (a Discord attachment's, a multipart part's) is checked first, to
refuse early without reading the bytes; the bytes have the last word.
"""

from __future__ import annotations

from bot.errors import InvalidValue
from bot.media.sniff import Kind, MediaType, sniff

#: The kinds of file each file param takes: a still or animated picture for an image loader,
#: a video or an animated picture for a video loader, sound for an audio loader.
TAKES: dict[str, frozenset[Kind]] = {
    "image": frozenset({Kind.IMAGE, Kind.ANIMATION}),
    "video": frozenset({Kind.VIDEO, Kind.ANIMATION}),
    "audio": frozenset({Kind.AUDIO}),
}
#: The largest file each takes, in bytes.
MAX_BYTES: dict[str, int] = {
    "image": 25 * 1024 * 1024,
    "video": 100 * 1024 * 1024,
    "audio": 50 * 1024 * 1024,
}
_ARTICLE = {"image": "an image", "video": "a video", "audio": "an audio"}
_EXAMPLES = {
    "image": "PNG, JPEG, WebP or GIF",
    "video": "MP4, WebM, MOV or an animated GIF/WebP",
    "audio": "MP3, WAV, FLAC, Ogg or M4A",
}


def _declared_kinds(mime: str) -> set[Kind]:
    major, _, minor = mime.partition("/")
    if major == "image":
        return (
            {Kind.IMAGE, Kind.ANIMATION}
            if minor in ("gif", "webp", "png", "apng")
            else {Kind.IMAGE}
        )
    if major == "video":
        return {Kind.VIDEO}
    if major == "audio":
        return {Kind.AUDIO}
    return set()


def check_declared(param: str, param_type: str, mime: str | None, size: int) -> None:
    """Refuse a file by what it says it is (None: it says nothing) and its size, before its
    bytes are read.

    Raises:
        InvalidValue: it says it is something the param does not take, or it is too large.
    """
    takes = TAKES[param_type]
    if mime is not None and not (_declared_kinds(mime.split(";")[0].strip().lower()) & takes):
        raise InvalidValue(param, _refusal(param_type))
    _check_size(param, param_type, size)


def _refusal(param_type: str, holds: str = "") -> str:
    if param_type == "image":
        return f"must be an image ({_EXAMPLES['image']}{holds})"
    return f"not {_ARTICLE[param_type]} file ({_EXAMPLES[param_type]}{holds})"


def _check_size(param: str, param_type: str, size: int) -> None:
    if size > MAX_BYTES[param_type]:
        limit = MAX_BYTES[param_type] // (1024 * 1024)
        raise InvalidValue(param, f"is too large ({limit} MiB at most)")


def check_file(param: str, param_type: str, data: bytes) -> MediaType:
    """What a file given for a file param is, from its bytes; refused when it is not what the
    param takes.

    Raises:
        InvalidValue: the bytes are not of a kind the param takes, or too many.
    """
    _check_size(param, param_type, len(data))
    media = sniff(data)
    if media.kind not in TAKES[param_type]:
        holds = "" if media.kind is Kind.FILE else f", it holds {_a(media.kind.noun)}"
        raise InvalidValue(param, _refusal(param_type, holds))
    return media


def _a(noun: str) -> str:
    return f"{'an' if noun[0] in 'aeiou' else 'a'} {noun}"
