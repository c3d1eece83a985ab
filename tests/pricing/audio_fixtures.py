"""Audio files for the duration tests, encoded with PyAV from a generated signal (no numpy needed).

The signal is 16-bit PCM: a stretch of digital silence, then a 440 Hz sine under white noise. The
silence-then-noise shape matters for mp3 VBR: LAME spends the minimum bitrate on silence and a high
one on noise, so frame sizes really differ and extrapolating the first frames' bitrate really fails
(a VBR encode of a steady sine is effectively CBR, and a test built on it could not fail).
"""

from __future__ import annotations

import math
import random
import wave
from array import array
from collections.abc import Mapping
from fractions import Fraction
from pathlib import Path
from typing import Any

import av

SECONDS = Fraction(73, 10)
SILENT_SECONDS = Fraction(2)
# libmp3lame's `-q:a N` is the qscale flag plus global_quality = N * FF_QP2LAMBDA.
_FF_QP2LAMBDA = 118


def pcm_samples(rate: int, seconds: Fraction = SECONDS) -> array[int]:
    """Mono samples: silence for `SILENT_SECONDS`, then sine plus noise; the same on every run."""
    rng = random.Random(7)
    total = int(seconds * rate)
    silent = min(total, int(SILENT_SECONDS * rate))
    samples = array("h", bytes(2 * silent))
    step = 2 * math.pi * 440 / rate
    samples.extend(int(9000 * math.sin(step * i) + rng.uniform(-12000, 12000)) for i in range(silent, total))
    return samples


def write_wav(path: Path, *, rate: int = 16_000, seconds: Fraction = SECONDS) -> Path:
    """A plain PCM wav through the standard library."""
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(pcm_samples(rate, seconds).tobytes())
    return path


class PipeSink:
    """A write-only, non-seekable sink, as a browser's MediaRecorder streams into.

    PyAV sees no `seek`, so the muxer cannot go back and write the length into the header.
    """

    def __init__(self) -> None:
        self.data = bytearray()

    def write(self, data: bytes) -> int:
        self.data += data
        return len(data)


def encode(target: Path | PipeSink, spec: Mapping[str, Any]) -> None:
    """Encode the generated signal as `spec` says: container, codec, rate and optional settings.

    Optional keys: `layout` ("mono" or "stereo"), `bit_rate`, `vbr_quality` (libmp3lame -q:a),
    `container_options`, `codec_options`.
    """
    rate: int = spec["rate"]
    layout: str = spec.get("layout", "mono")
    mono = pcm_samples(rate)
    samples = mono if layout == "mono" else array("h", (s for s in mono for _ in range(2)))
    channels = 1 if layout == "mono" else 2
    out = av.open(
        str(target) if isinstance(target, Path) else target,
        mode="w",
        format=spec["container"],
        container_options=dict(spec.get("container_options", {})),
    )
    try:
        options = dict(spec.get("codec_options", {}))
        stream = out.add_stream(spec["codec"], rate=rate, options=options)
        stream.codec_context.layout = layout
        if "bit_rate" in spec:
            stream.codec_context.bit_rate = spec["bit_rate"]
        if "vbr_quality" in spec:
            stream.codec_context.qscale = True
            stream.codec_context.global_quality = spec["vbr_quality"] * _FF_QP2LAMBDA
        chunk = 1024
        for start in range(0, len(mono), chunk):
            part = samples[start * channels : (start + chunk) * channels]
            frame = av.AudioFrame(format="s16", layout=layout, samples=len(part) // channels)
            frame.planes[0].update(part.tobytes())
            frame.sample_rate = rate
            frame.pts = start
            frame.time_base = Fraction(1, rate)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    finally:
        out.close()


def encode_to_file(path: Path, spec: Mapping[str, Any]) -> Path:
    """Encode to `path`; with `spec["streamed"]`, through a pipe as a live recorder would."""
    if spec.get("streamed"):
        sink = PipeSink()
        encode(sink, spec)
        path.write_bytes(sink.data)
    else:
        encode(path, spec)
    return path


# mp3 is encoded at 48 kHz (MPEG-1, 24 ms frames). At 16 kHz (MPEG-2, 36 ms frames) the encoder's
# priming and padding, which every mp3 duration counts, are ~1.1 % of a 7.3 s clip.
SPECS: dict[str, dict[str, Any]] = {
    "cbr.mp3": {"container": "mp3", "codec": "libmp3lame", "rate": 48_000, "bit_rate": 64_000},
    "vbr_xing.mp3": {"container": "mp3", "codec": "libmp3lame", "rate": 48_000, "vbr_quality": 0},
    "vbr_no_xing.mp3": {
        "container": "mp3",
        "codec": "libmp3lame",
        "rate": 48_000,
        "vbr_quality": 0,
        "container_options": {"write_xing": "0"},
    },
    "speech.m4a": {"container": "ipod", "codec": "aac", "rate": 16_000, "bit_rate": 32_000},
    # FFmpeg's own Vorbis encoder is experimental and stereo only.
    "speech.ogg": {
        "container": "ogg",
        "codec": "vorbis",
        "rate": 48_000,
        "layout": "stereo",
        "codec_options": {"strict": "experimental"},
    },
    "speech.opus": {"container": "opus", "codec": "libopus", "rate": 48_000, "bit_rate": 24_000},
    "speech.flac": {"container": "flac", "codec": "flac", "rate": 16_000},
    "speech.webm": {"container": "webm", "codec": "libopus", "rate": 48_000, "bit_rate": 24_000},
    "recorder.webm": {
        "container": "webm",
        "codec": "libopus",
        "rate": 48_000,
        "bit_rate": 24_000,
        "streamed": True,
    },
    "live.webm": {
        "container": "webm",
        "codec": "libopus",
        "rate": 48_000,
        "bit_rate": 24_000,
        "container_options": {"live": "1"},
    },
    "streamed.wav": {"container": "wav", "codec": "pcm_s16le", "rate": 16_000, "streamed": True},
    "streamed.flac": {"container": "flac", "codec": "flac", "rate": 16_000, "streamed": True},
    "fragmented.m4a": {
        "container": "mp4",
        "codec": "aac",
        "rate": 16_000,
        "container_options": {"movflags": "frag_keyframe+empty_moov"},
    },
    "flac_in.ogg": {"container": "ogg", "codec": "flac", "rate": 16_000},
}
