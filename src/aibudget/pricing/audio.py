"""Audio duration of uploaded files, read from the container; a byte-rate guess as last resort.

Speech-to-text calls are charged by the real length of the uploaded audio, so this module owns
turning a file into seconds. The container format is sniffed from the first bytes (the file name is
only used in messages, never to decide the format), then readers are tried in order:

1. tinytag, header only and fast: wav, mp3 with a Xing/Info/VBRI header, m4a, ogg, opus, flac.
   Its answer is distrusted when it is missing or zero (fragmented mp4, streamed flac, Ogg FLAC),
   when a wav claims more audio than the file holds (a streamed wav's 0xFFFFFFFF data size), and
   for mp3 without a Xing/VBRI header, where tinytag extrapolates the first frames' bitrate; wrong
   for VBR, e.g. a recording that starts with silence.
2. PyAV (FFmpeg) for webm and whatever tinytag could not read. The header duration is used only for
   containers that store one (webm, m4a, ogg, opus, flac); otherwise, and when it is absent (a
   browser's MediaRecorder streams webm without one), the packets are demuxed, not decoded, and the
   duration is the end of the last packet minus the start of the first.
3. A byte-rate heuristic when no reader finds audio: `method="heuristic"`, `format="unknown"`.

Returned seconds are `Decimal`, rounded up to the millisecond; a real duration is never capped.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal
from fractions import Fraction
from io import SEEK_END
from typing import BinaryIO, Literal

import av
from tinytag import TinyTag, TinyTagException

from aibudget.errors import UnreadableAudio

AudioFormat = Literal["wav", "mp3", "m4a", "ogg", "opus", "flac", "webm", "unknown"]

# Bit rate assumed when no reader can measure the file. 32 kbit/s is at the low end of what speech
# is uploaded at (Opus/MP3 voice is usually 32-128 kbit/s), so size / rate is a *long* estimate:
# an unreadable upload is billed for at least as long as it could plausibly play, never for less.
HEURISTIC_BITS_PER_SECOND = 32_000

_MILLISECOND = Decimal("0.001")
_MICROS_PER_SECOND = 1_000_000  # PyAV's container.duration is in AV_TIME_BASE units
_SNIFF_BYTES = 64
_MPEG_SCAN_BYTES = 4096  # how far after an ID3 tag to look for the first MPEG frame
_HEADER_DURATION_FORMATS: frozenset[AudioFormat] = frozenset({"webm", "m4a", "ogg", "opus", "flac"})
_TINYTAG_FORMATS: frozenset[AudioFormat] = frozenset({"wav", "mp3", "m4a", "ogg", "opus", "flac"})


@dataclass(frozen=True, slots=True)
class AudioDuration:
    """How long an audio file plays, and how that was found out."""

    seconds: Decimal  # quantized to 0.001 s, >= 0
    method: Literal["container", "heuristic"]
    format: AudioFormat  # the sniffed container, "unknown" if none of the named ones

    def __post_init__(self) -> None:
        if self.seconds < 0 or self.seconds != self.seconds.quantize(_MILLISECOND):
            raise ValueError(f"seconds must be >= 0 and in whole milliseconds, got {self.seconds}")


def read_duration(source: str | os.PathLike[str] | BinaryIO, *, filename: str | None = None) -> AudioDuration:
    """Duration of the audio at `source`: a path, or a seekable binary file object.

    `filename` is the upload's original name, used in error messages only. A file object is read
    from its start and left at the position it had. Raises `UnreadableAudio` for an empty or
    missing file.
    """
    if isinstance(source, str | os.PathLike):
        label = filename or os.fspath(source)
        try:
            fh = open(source, "rb")  # noqa: SIM115 - closed by the `with` below
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
            raise UnreadableAudio(f"audio file {label!r} does not exist", field="file") from exc
        with fh:
            return _read(fh, label)
    if not source.seekable():
        raise ValueError("read_duration needs a seekable file object (spool the upload first)")
    position = source.tell()
    try:
        return _read(source, filename or "upload")
    finally:
        source.seek(position)


def _read(fh: BinaryIO, label: str) -> AudioDuration:
    size = fh.seek(0, SEEK_END)
    if size == 0:
        raise UnreadableAudio(f"audio file {label!r} is empty (0 bytes)", field="file")
    fmt, audio_offset = _sniff(fh)
    seconds = _tinytag_seconds(fh, fmt, size, audio_offset) if fmt in _TINYTAG_FORMATS else None
    if seconds is None:
        seconds = _pyav_seconds(fh, fmt)
    if seconds is None:
        estimate = Decimal(size * 8) / Decimal(HEURISTIC_BITS_PER_SECOND)
        return AudioDuration(_to_ms(estimate), "heuristic", "unknown")
    return AudioDuration(_to_ms(seconds), "container", fmt)


def _sniff(fh: BinaryIO) -> tuple[AudioFormat, int]:
    """The container from its magic bytes, and where the audio starts (after an ID3v2 tag)."""
    fh.seek(0)
    head = fh.read(_SNIFF_BYTES)
    offset = 0
    if head[:3] == b"ID3" and len(head) >= 10:
        footer = 10 if head[5] & 0x10 else 0
        offset = 10 + footer + _syncsafe(head[6:10])
        fh.seek(offset)
        head = fh.read(_SNIFF_BYTES)
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "wav", offset
    if head[:4] == b"fLaC":
        return "flac", offset
    if head[4:8] == b"ftyp":
        return "m4a", offset
    if head[:4] == b"OggS":
        return ("opus" if b"OpusHead" in head else "ogg"), offset
    if head[:4] == b"\x1aE\xdf\xa3":  # EBML: Matroska; WebM is the profile browsers record
        return ("webm" if b"webm" in head else "unknown"), offset
    if _is_mp3_frame_header(head) or (offset and _first_mp3_frame(fh, offset) is not None):
        return "mp3", offset
    return "unknown", offset


def _syncsafe(four: bytes) -> int:
    return (four[0] & 0x7F) << 21 | (four[1] & 0x7F) << 14 | (four[2] & 0x7F) << 7 | four[3] & 0x7F


def _is_mp3_frame_header(head: bytes) -> bool:
    """An MPEG audio Layer III frame header: sync, known version, valid bitrate and sample rate."""
    if len(head) < 4 or head[0] != 0xFF or head[1] & 0xE0 != 0xE0:
        return False
    version, layer = head[1] >> 3 & 0b11, head[1] >> 1 & 0b11
    bitrate, rate = head[2] >> 4, head[2] >> 2 & 0b11
    return version != 0b01 and layer == 0b01 and 0 < bitrate < 15 and rate != 0b11


def _first_mp3_frame(fh: BinaryIO, offset: int) -> bytes | None:
    """The first bytes of the first Layer III frame at or shortly after `offset`."""
    fh.seek(offset)
    data = fh.read(_MPEG_SCAN_BYTES + 64)
    for i in range(min(len(data), _MPEG_SCAN_BYTES)):
        if data[i] == 0xFF and _is_mp3_frame_header(data[i : i + 4]):
            return data[i : i + 64]
    return None


def _has_mp3_length_header(fh: BinaryIO, offset: int) -> bool:
    """Whether the first frame carries a Xing/Info or VBRI header with frame and byte counts.

    Only then is tinytag's mp3 duration exact; without one it extrapolates the bitrate of the first
    frames to the whole file, which is only right for CBR. Mirrors tinytag's own check.
    """
    frame = _first_mp3_frame(fh, offset)
    if frame is None:
        return False
    for tag in (b"Xing", b"Info"):
        at = frame.find(tag, 4)
        if at != -1 and at + 16 <= len(frame):
            flags = int.from_bytes(frame[at + 4 : at + 8])
            frames = int.from_bytes(frame[at + 8 : at + 12])
            byte_count = int.from_bytes(frame[at + 12 : at + 16])
            return flags & 0b11 == 0b11 and frames > 0 and byte_count > 0
    if frame[36:40] == b"VBRI":
        return int.from_bytes(frame[46:50]) > 0 and int.from_bytes(frame[50:54]) > 0
    return False


def _tinytag_seconds(fh: BinaryIO, fmt: AudioFormat, size: int, offset: int) -> Decimal | None:
    """tinytag's duration when it can be trusted, else None (the next reader decides)."""
    if fmt == "mp3" and not _has_mp3_length_header(fh, offset):
        return None
    fh.seek(0)
    try:
        # The sniffed extension picks tinytag's parser, so a misleading upload name cannot.
        tag = TinyTag.get(filename=f"sniffed.{fmt}", file_obj=fh, tags=False)
    except TinyTagException:
        return None
    duration = tag.duration
    if duration is None or not math.isfinite(duration) or duration <= 0:
        return None
    if fmt == "wav" and duration * (tag.bitrate or 0) * 125 > size:  # kbit/s -> bytes/s
        return None  # the data chunk claims more bytes than the file has: a streamed wav
    return Decimal(str(duration))


def _pyav_seconds(fh: BinaryIO, fmt: AudioFormat) -> Decimal | None:
    """FFmpeg's reading: the header duration where the format stores one, else a packet walk."""
    fh.seek(0)
    try:
        with av.open(fh, mode="r") as container:
            if not container.streams.audio:
                return None  # e.g. a text file, which FFmpeg happily opens as "tty"
            if fmt in _HEADER_DURATION_FORMATS and container.duration:
                return Decimal(container.duration) / _MICROS_PER_SECOND
            return _walk_packets(container, container.streams.audio[0])
    except av.FFmpegError:
        return None


def _walk_packets(container: av.container.InputContainer, stream: av.AudioStream) -> Decimal | None:
    """End of the last packet minus start of the first, from timestamps only (nothing decoded)."""
    time_base = stream.time_base
    start: int | None = None
    end: int | None = None
    last_duration = 0
    for packet in container.demux(stream):
        if packet.pts is None:
            continue  # the empty packet that flushes the demuxer
        last_duration = packet.duration or last_duration  # the last one may lack a duration
        start = packet.pts if start is None else min(start, packet.pts)
        end = max(end if end is not None else packet.pts, packet.pts + last_duration)
    if time_base is None or start is None or end is None or end <= start:
        return None
    seconds = Fraction(end - start) * time_base
    return Decimal(seconds.numerator) / Decimal(seconds.denominator)


def _to_ms(seconds: Decimal) -> Decimal:
    """Whole milliseconds, rounded up: billing never rounds a played sound down to less."""
    return seconds.quantize(_MILLISECOND, rounding=ROUND_CEILING)
