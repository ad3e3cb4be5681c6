"""Phone segments of speech, from pocketsphinx's English acoustic model (offline, in its wheel).

The acoustic model was trained on many speakers and normalises each recording's cepstra, so
its phone decisions carry across voices where a log-mel learned from one speaker does not
(docs/model.md, "Lip sync for any voice"). Phone-loop decoding (``allphone``) needs no words
or language model, so it also runs on other languages: it then names the nearest English
phone, which is still an open vowel, a closure or a pause where the speech has one.

Rows are the same as :func:`talk3d.audio.compute_logmel`'s: 100 per second, row ``t`` centred
on sample ``160 * t``. pocketsphinx frame ``i`` analyses samples ``160 i .. 160 i + 410``
(centre ``160 i + 205``), so it lands on row ``i + 1``.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from talk3d.audio import num_feature_frames
from talk3d.errors import UserError

PHONES = ("AA AE AH AO AW AY B CH D DH EH ER EY F G HH IH IY JH K L M N NG OW OY P R S SH T TH "
          "UH UW V W Y Z ZH SIL NOISE").split()
"""Columns of :func:`phone_rows`: the 39 phones of the CMU dictionary, silence and a column
for the model's fillers (breath, noise, laughter)."""
SIL, NOISE = PHONES.index("SIL"), PHONES.index("NOISE")
FRAME_OFFSET = 1
"""pocketsphinx frame ``i`` is centred on feature row ``i + FRAME_OFFSET`` (see the module note)."""


INSTALL = ("install it with 'python3 -m pip install \"pocketsphinx>=5,<6\"' (or run 'bash install.sh' again), or "
           "render with --lip-drive audio")


def _pocketsphinx():
    """The pocketsphinx module, or a one-line :class:`UserError` saying how to install it."""
    try:
        import pocketsphinx
    except ImportError:
        raise UserError(f"phone decoding needs the 'pocketsphinx' package, which is missing: {INSTALL}") from None
    return pocketsphinx


@functools.cache
def _model_files() -> tuple[str, str]:
    """The acoustic model folder and the phone language model of pocketsphinx's wheel."""
    root = Path(_pocketsphinx().get_model_path()) / "en-us"
    return str(root / "en-us"), str(root / "en-us-phone.lm.bin")


def phone_segments(audio: np.ndarray) -> list[tuple[str, int, int]]:
    """Phone-loop decoding of ``audio (S,)`` float32 16 kHz mono in [-1, 1].

    Returns:
        ``[(phone, first_frame, last_frame), ...]`` in pocketsphinx frames (10 ms, last inclusive);
        fillers keep their pocketsphinx names (``+NSN+``, ...).
    """
    hmm, phone_lm = _model_files()
    pcm = (np.clip(np.asarray(audio, np.float32), -1.0, 1.0) * 32767.0).astype("<i2").tobytes()
    try:
        decoder = _pocketsphinx().Decoder(hmm=hmm, allphone=phone_lm, lw=2.0, beam=1e-20, pbeam=1e-20,
                                          loglevel="FATAL")
        decoder.start_utt()
        decoder.process_raw(pcm, full_utt=True)
        decoder.end_utt()
        return [(seg.word, int(seg.start_frame), int(seg.end_frame)) for seg in decoder.seg()]
    except (RuntimeError, ValueError) as exc:  # a damaged model folder
        raise UserError(f"pocketsphinx could not decode phones ({exc}); reinstall it: {INSTALL}") from None


def segments_to_rows(segments: list[tuple[str, int, int]], rows: int) -> np.ndarray:
    """One-hot ``(rows, len(PHONES))`` float32 of phone segments; rows no segment covers are
    silence. Unknown names (fillers) go to the ``NOISE`` column."""
    out = np.zeros((rows, len(PHONES)), np.float32)
    out[:, SIL] = 1.0
    for name, first, last in segments:
        a, b = max(0, first + FRAME_OFFSET), min(rows, last + 1 + FRAME_OFFSET)
        if a >= b:
            continue
        out[a:b] = 0.0
        out[a:b, PHONES.index(name) if name in PHONES else NOISE] = 1.0
    return out


def phone_rows(audio: np.ndarray) -> np.ndarray:
    """Phones of ``audio (S,)`` (16 kHz) as ``(ceil(S / 160), len(PHONES))`` float32 one-hot rows,
    aligned with :func:`talk3d.audio.compute_logmel`'s rows."""
    rows = num_feature_frames(np.asarray(audio).shape[0])
    if rows == 0:
        return np.zeros((0, len(PHONES)), np.float32)
    return segments_to_rows(phone_segments(audio), rows)
