"""Audio duration for billing: every format read from its container, within 1 % of the truth.

Every file is encoded here, from a 7.3 s signal (silence, then sine and noise), by PyAV.
"""

from __future__ import annotations

import io
import os
import struct
import tempfile
from decimal import Decimal
from pathlib import Path
from typing import BinaryIO, cast

import av
import pytest
from tinytag import TinyTag

from aibudget.errors import UnreadableAudio
from aibudget.pricing.audio import HEURISTIC_BITS_PER_SECOND, AudioDuration, read_duration
from tests.pricing import audio_fixtures as fx

TRUE_SECONDS = Decimal(fx.SECONDS.numerator) / fx.SECONDS.denominator
TOLERANCE = TRUE_SECONDS / 100


@pytest.fixture(scope="module")
def audio(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every fixture file by name, encoded once for the module."""
    folder = tmp_path_factory.mktemp("audio")
    files = {name: fx.encode_to_file(folder / name, spec) for name, spec in fx.SPECS.items()}
    files["speech.wav"] = fx.write_wav(folder / "speech.wav")
    return files


def assert_measured(result: AudioDuration, fmt: str) -> None:
    assert result.method == "container"
    assert result.format == fmt
    assert abs(result.seconds - TRUE_SECONDS) <= TOLERANCE, result


@pytest.mark.parametrize(
    ("name", "fmt"),
    [
        ("speech.wav", "wav"),
        ("cbr.mp3", "mp3"),
        ("vbr_xing.mp3", "mp3"),
        ("speech.m4a", "m4a"),
        ("speech.ogg", "ogg"),
        ("speech.opus", "opus"),
        ("speech.flac", "flac"),
        ("speech.webm", "webm"),
    ],
)
def test_each_format_is_read_from_its_container(audio: dict[str, Path], name: str, fmt: str) -> None:
    assert_measured(read_duration(audio[name]), fmt)


def test_mp3_vbr_without_xing_header_is_walked_not_extrapolated(audio: dict[str, Path]) -> None:
    path = audio["vbr_no_xing.mp3"]
    head = path.read_bytes()[:4096]
    assert not any(marker in head for marker in (b"Xing", b"Info", b"VBRI"))
    with av.open(str(path)) as container:
        sizes = [p.size for p in container.demux(container.streams.audio[0]) if p.size]
    assert max(sizes) >= 4 * min(sizes), "not really VBR: the frame sizes barely differ"
    extrapolated = Decimal(str(TinyTag.get(path).duration))
    assert abs(extrapolated - TRUE_SECONDS) > 10 * TOLERANCE, "a first-frames estimate must fail"

    assert_measured(read_duration(path), "mp3")


@pytest.mark.parametrize("name", ["recorder.webm", "live.webm"])
def test_streamed_webm_without_duration_header_is_walked(audio: dict[str, Path], name: str) -> None:
    with av.open(str(audio[name])) as container:
        assert not container.duration, "the header should carry no duration, like MediaRecorder's"

    assert_measured(read_duration(audio[name]), "webm")


def test_streamed_wav_is_not_billed_for_its_placeholder_size(audio: dict[str, Path]) -> None:
    head = audio["streamed.wav"].read_bytes()[:256]
    data_size = struct.unpack_from("<I", head, head.index(b"data") + 4)[0]
    assert data_size == 0xFFFF_FFFF, "a wav streamed through a pipe cannot back-fill its sizes"
    taken_literally = TinyTag.get(audio["streamed.wav"]).duration or 0
    assert taken_literally > 100_000  # ~37 hours

    assert_measured(read_duration(audio["streamed.wav"]), "wav")


@pytest.mark.parametrize(
    ("name", "fmt"),
    [("streamed.flac", "flac"), ("fragmented.m4a", "m4a"), ("flac_in.ogg", "ogg")],
)
def test_header_without_a_length_falls_back_to_pyav(audio: dict[str, Path], name: str, fmt: str) -> None:
    assert not TinyTag.get(audio[name]).duration  # tinytag reads 0 s from these headers

    assert_measured(read_duration(audio[name]), fmt)


def test_browser_upload_cut_short_is_billed_for_what_it_holds(audio: dict[str, Path], tmp_path: Path) -> None:
    cut = tmp_path / "cut.webm"
    cut.write_bytes(audio["recorder.webm"].read_bytes()[:9000])

    result = read_duration(cut)

    assert result.method == "container"
    assert result.format == "webm"
    assert Decimal(1) < result.seconds < TRUE_SECONDS


def test_file_name_does_not_decide_the_format(audio: dict[str, Path], tmp_path: Path) -> None:
    disguised = tmp_path / "dictation.wav"
    disguised.write_bytes(audio["vbr_no_xing.mp3"].read_bytes())

    assert_measured(read_duration(disguised), "mp3")
    with disguised.open("rb") as upload:
        assert_measured(read_duration(upload, filename="dictation.webm"), "mp3")


@pytest.mark.parametrize(
    "name", ["speech.wav", "vbr_no_xing.mp3", "speech.m4a", "speech.opus", "recorder.webm"]
)
def test_file_object_reads_the_same_as_its_path(audio: dict[str, Path], name: str) -> None:
    with audio[name].open("rb") as upload:
        upload.seek(123)
        from_file = read_duration(upload, filename=f"upload-{name}")
        assert upload.tell() == 123, "the caller's position is restored"
        assert not upload.closed
    with tempfile.SpooledTemporaryFile(max_size=1 << 20) as spooled:  # as an upload arrives
        spooled.write(audio[name].read_bytes())
        # Starlette's UploadFile.file is this object, typed BinaryIO there.
        from_spooled = read_duration(cast(BinaryIO, spooled))

    assert from_file == from_spooled == read_duration(audio[name])


def test_three_hour_file_is_not_capped(tmp_path: Path) -> None:
    rate, hours = 8_000, 3
    data_size = rate * 3600 * hours  # 8-bit mono: one byte per sample
    path = tmp_path / "long.wav"
    with path.open("wb") as out:
        fmt_chunk = struct.pack("<HHIIHH", 1, 1, rate, rate, 1, 8)
        out.write(b"RIFF" + struct.pack("<I", 36 + data_size) + b"WAVE")
        out.write(b"fmt " + struct.pack("<I", 16) + fmt_chunk)
        out.write(b"data" + struct.pack("<I", data_size))
        out.truncate(44 + data_size)  # sparse: the silence takes no disk

    assert read_duration(path) == AudioDuration(Decimal("10800.000"), "container", "wav")


@pytest.mark.parametrize("content", [os.urandom(20_000), b"hello, this is a letter, not audio\n" * 500])
def test_non_audio_file_is_estimated_from_its_size(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "upload.mp3"
    path.write_bytes(content)

    result = read_duration(path)

    expected = Decimal(len(content) * 8) / HEURISTIC_BITS_PER_SECOND
    assert result == AudioDuration(expected.quantize(Decimal("0.001")), "heuristic", "unknown")


def test_heuristic_assumes_a_low_speech_bitrate_so_it_errs_long() -> None:
    assert HEURISTIC_BITS_PER_SECOND == 32_000


def test_empty_file_is_unreadable(tmp_path: Path) -> None:
    path = tmp_path / "empty.webm"
    path.touch()

    with pytest.raises(UnreadableAudio, match="empty") as raised:
        read_duration(path)
    assert raised.value.field == "file"
    with pytest.raises(UnreadableAudio, match=r"recording\.webm"):
        read_duration(io.BytesIO(), filename="recording.webm")


def test_missing_file_is_unreadable(tmp_path: Path) -> None:
    with pytest.raises(UnreadableAudio, match="does not exist"):
        read_duration(tmp_path / "gone.wav")


def test_seconds_are_decimal_milliseconds_rounded_up(audio: dict[str, Path]) -> None:
    seconds = read_duration(audio["speech.webm"]).seconds

    assert isinstance(seconds, Decimal)
    assert seconds.as_tuple().exponent == -3
    with pytest.raises(ValueError, match="milliseconds"):
        AudioDuration(Decimal("1.0001"), "container", "wav")
    with pytest.raises(ValueError, match=">= 0"):
        AudioDuration(Decimal("-1.000"), "container", "wav")
