"""The phonetic lip prior: how far the mouth opens, from the phones being spoken.

A lip-code predictor learned from one speaker's 10-30 s of log-mel follows that voice and
few others (cross-speaker opening correlation 0.13 on the shared clips). The prior instead
knows, from phonetics, how open the jaw and lips are for each phone (open vowels most, the
bilabial closures p/b/m not at all), reads the phones from a speaker-independent recogniser
(:mod:`talk3d.phonemes`) and adds the speech level; the mouth moves a little before the sound
(:data:`LEAD_SECONDS`). Only its calibration is the avatar's: a quantile map from prior values
to this person's tracked mouth opening, and the lip code that goes with each opening (a line
through the training frames' codes), both fitted on the training frames.

Shapes: feature rows at 100 Hz (``T``), video frames (``N``), lip-code size ``K``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from talk3d.phonemes import PHONES

OPENNESS = {
    # open and open-mid vowels and diphthongs that start open
    "AA": 1.0, "AE": 0.9, "AO": 0.85, "AW": 0.85, "AY": 0.85, "AH": 0.7, "EH": 0.65, "OW": 0.6, "OY": 0.6,
    "EY": 0.55, "HH": 0.5, "IH": 0.45, "UH": 0.4, "ER": 0.4, "L": 0.45,
    # close vowels, glides and consonants made behind the lips (teeth apart, lips slightly open)
    "K": 0.4, "G": 0.4, "Y": 0.35, "NG": 0.35, "IY": 0.3, "UW": 0.3, "R": 0.3, "T": 0.3, "D": 0.3, "N": 0.3,
    "TH": 0.3, "DH": 0.3, "SH": 0.3, "ZH": 0.3, "CH": 0.3, "JH": 0.3, "S": 0.25, "Z": 0.25,
    # lips rounded, on the teeth, or closed
    "W": 0.2, "F": 0.15, "V": 0.15, "B": 0.0, "P": 0.0, "M": 0.0, "SIL": 0.0, "NOISE": 0.1,
}
"""Mouth opening per phone, 0 (lips closed) to 1 (widest), from articulatory phonetics (jaw
height of the vowels; place of articulation of the consonants)."""
ENERGY_WEIGHT = 0.25
"""Weight of the speech level (floor-normalised mean log-mel, clipped at 0) beside the phone's
opening (0.25 vs 0.5 on the shared clips: closure recall 0.45 vs 0.41, correlation 0.348 vs 0.352)."""
SPEECH_LEVEL = 0.1
"""Floor-normalised level below which a phone's opening is scaled down (linearly to 0 at 0):
the phone loop names a phone even in digital silence ('S' for half a second of zeros), and
padded or synthetic audio has such silence. (On the shared clips, which have none, it costs
0.003 of correlation.)"""
SMOOTH_ROWS = 9
"""Hann smoothing of the prior over feature rows (90 ms: the lips cannot move faster)."""
CLOSURE_ROWS = 5
"""Hann width (rows) of the bilabial closures (p, b, m), which multiply the smoothed prior by
``1 - closure``: the lips shut on them whatever the vowels around them, where smoothing alone
left a 60-ms closure at ~40 % of its neighbours' opening (on the shared clips: correlation 0.345
-> 0.372, closure recall 0.44 -> 0.50)."""
LEAD_SECONDS = 0.12
"""The mouth leads the sound: frame ``f`` reads the prior ``LEAD_SECONDS`` later. Measured on
the shared clips (best lead of the prior against each speaker's tracked mouth: 2-4 frames at 25 fps)."""
QUANTILES = 21
"""Points of the calibration's quantile map."""

_OPENNESS = np.array([OPENNESS[p] for p in PHONES], np.float32)
_BILABIAL = np.array([p in ("B", "P", "M") for p in PHONES], np.float32)
FORMAT_VERSION = 2
"""Of ``lip_prior.json``; a calibration of another version (made with another prior) is redone by
``talk3d fit``."""


def prior_rows(phones: np.ndarray, normalised_feats: np.ndarray, energy_weight: float = ENERGY_WEIGHT,
               smooth_rows: int = SMOOTH_ROWS) -> np.ndarray:
    """The prior per feature row.

    Args:
        phones: ``(T, len(PHONES))`` one-hot phone rows (:func:`talk3d.phonemes.phone_rows`).
        normalised_feats: ``(T, D)`` the clip's floor-normalised log-mel
            (:func:`talk3d.model.audio_encoder.normalize_floor`): pauses ~0, speech ~1.
        energy_weight, smooth_rows: see :data:`ENERGY_WEIGHT`, :data:`SMOOTH_ROWS`.
    Returns:
        ``(T,)`` float32, 0 for closed lips and silence, about 1-2 for loud open vowels.
    """
    phones = np.asarray(phones, np.float32)
    feats = np.asarray(normalised_feats, np.float32)
    if phones.shape[0] != feats.shape[0] or phones.shape[1:] != (len(PHONES),):
        raise ValueError(f"phones {phones.shape} and features {feats.shape} must be (T, {len(PHONES)}) and (T, D)")
    level = np.clip(feats.mean(axis=1), 0.0, None)
    raw = (phones @ _OPENNESS) * np.clip(level / SPEECH_LEVEL, 0.0, 1.0) + energy_weight * level
    closure = np.clip(_smooth(phones @ _BILABIAL, CLOSURE_ROWS), 0.0, 1.0)
    return (_smooth(raw, smooth_rows) * (1.0 - closure)).astype(np.float32)


def _smooth(rows: np.ndarray, width: int) -> np.ndarray:
    """``rows (T,)`` convolved with a unit-sum Hann window of ``width`` rows; the ends are extended,
    so the output has ``T`` rows for any ``T``."""
    kernel = np.hanning(width + 2)[1:-1]
    half = width // 2
    padded = np.pad(rows, (half, width - 1 - half), mode="edge") if rows.size else rows
    return np.convolve(padded, kernel / kernel.sum(), mode="valid")


def at_frames(rows: np.ndarray, feature_rate: float, fps: float, frames: np.ndarray,
              lead_seconds: float = LEAD_SECONDS) -> np.ndarray:
    """The prior ``rows (T,)`` read at video ``frames (N,)``: the frame's centre plus
    ``lead_seconds``, linearly interpolated (row ``t`` sits at ``t / feature_rate`` s); the
    last row holds beyond the audio, 0 without audio."""
    rows = np.asarray(rows, np.float64)
    if rows.size == 0:
        return np.zeros(len(frames), np.float32)
    t = ((np.asarray(frames, np.float64) + 0.5) / fps + lead_seconds) * feature_rate
    return np.interp(t, np.arange(rows.size), rows).astype(np.float32)


def prior_at_frames(phones: np.ndarray, normalised_feats: np.ndarray, feature_rate: float, fps: float,
                    frames: np.ndarray, energy_weight: float = ENERGY_WEIGHT, smooth_rows: int = SMOOTH_ROWS,
                    lead_seconds: float = LEAD_SECONDS) -> np.ndarray:
    """The prior ``(N,)`` of video ``frames`` of a clip: :func:`prior_rows` of its phone rows and
    floor-normalised features (``(T, P)``, ``(T, D)``) read by :func:`at_frames`."""
    return at_frames(prior_rows(phones, normalised_feats, energy_weight, smooth_rows), feature_rate, fps, frames,
                     lead_seconds)


@dataclass
class LipPrior:
    """An avatar's calibration of the prior: prior value -> mouth opening -> lip code."""

    prior_quantiles: np.ndarray
    """``(Q,)`` the prior's quantiles over the training frames (non-decreasing)."""
    opening_quantiles: np.ndarray
    """``(Q,)`` the tracked mouth opening's quantiles over the same frames."""
    mean_opening: float
    mean_code: np.ndarray
    """``(K,)`` mean lip code of the training frames."""
    code_per_opening: np.ndarray
    """``(K,)`` change of the lip code per unit of opening (least squares over the training frames)."""
    energy_weight: float = ENERGY_WEIGHT
    smooth_rows: int = SMOOTH_ROWS
    lead_seconds: float = LEAD_SECONDS
    """The prior's settings when it was calibrated (kept with it: a calibration stays valid when
    the defaults change)."""

    def values(self, phones: np.ndarray, normalised_feats: np.ndarray, feature_rate: float, fps: float,
               frames: np.ndarray) -> np.ndarray:
        """:func:`prior_at_frames` with this calibration's settings."""
        return prior_at_frames(phones, normalised_feats, feature_rate, fps, frames, self.energy_weight,
                               self.smooth_rows, self.lead_seconds)

    @classmethod
    def fit(cls, prior: np.ndarray, opening: np.ndarray, codes: np.ndarray) -> LipPrior:
        """Calibrate on training frames: ``prior (N,)`` (made with the default settings), tracked
        ``opening (N,)``, ``codes (N, K)``."""
        prior, opening = np.asarray(prior, np.float64), np.asarray(opening, np.float64)
        codes = np.asarray(codes, np.float64)
        if not (prior.ndim == opening.ndim == 1 and codes.ndim == 2 and len(prior) == len(opening) == len(codes)):
            raise ValueError(f"prior {prior.shape}, opening {opening.shape}, codes {codes.shape}: need (N,), (N,), (N, K)")
        if len(prior) < 2:
            raise ValueError("the lip prior needs at least 2 training frames")
        q = np.linspace(0.0, 1.0, QUANTILES)
        centred = opening - opening.mean()
        slope = centred @ (codes - codes.mean(0)) / max(float(centred @ centred), 1e-12)
        return cls(np.quantile(prior, q), np.quantile(opening, q), float(opening.mean()), codes.mean(0), slope)

    def opening(self, prior: np.ndarray) -> np.ndarray:
        """Mouth opening ``(N,)`` for prior values ``(N,)`` (the quantile map; flat beyond its ends).

        Equal prior quantiles (silence: many frames at exactly 0) map to the mean of their
        openings, not to the most closed frame the person ever made."""
        xp, inverse = np.unique(self.prior_quantiles, return_inverse=True)
        fp = np.bincount(inverse, self.opening_quantiles) / np.bincount(inverse)
        return np.interp(np.asarray(prior, np.float64), xp, fp)

    def codes(self, prior: np.ndarray) -> np.ndarray:
        """Lip codes ``(N, K)`` float32 for prior values ``(N,)``."""
        change = self.opening(prior) - self.mean_opening
        return (self.mean_code[None] + change[:, None] * self.code_per_opening[None]).astype(np.float32)

    def to_dict(self) -> dict:
        return {"format": "talk3d-lip-prior", "version": FORMAT_VERSION, "energy_weight": self.energy_weight,
                "smooth_rows": self.smooth_rows, "lead_seconds": self.lead_seconds, "prior_quantiles": self.prior_quantiles.tolist(), "opening_quantiles": self.opening_quantiles.tolist(),
                "mean_opening": self.mean_opening, "mean_code": self.mean_code.tolist(),
                "code_per_opening": self.code_per_opening.tolist()}

    @classmethod
    def from_dict(cls, data: dict, code_size: int) -> LipPrior:
        """Parse :meth:`to_dict`'s output, checking kinds and shapes (``code_size`` = the model's ``K``)."""
        if data.get("format") != "talk3d-lip-prior" or data.get("version") != FORMAT_VERSION:
            raise ValueError(f"not a talk3d lip prior of version {FORMAT_VERSION} (an older prior's calibration)")
        arrays = {k: np.asarray(data[k], np.float64) for k in
                  ("prior_quantiles", "opening_quantiles", "mean_code", "code_per_opening")}
        if arrays["prior_quantiles"].shape != (QUANTILES,) or arrays["opening_quantiles"].shape != (QUANTILES,):
            raise ValueError(f"quantiles must hold {QUANTILES} numbers")
        if arrays["mean_code"].shape != (code_size,) or arrays["code_per_opening"].shape != (code_size,):
            raise ValueError(f"codes must hold {code_size} numbers (the model's lip code)")
        if not all(np.isfinite(a).all() for a in arrays.values()) or np.any(np.diff(arrays["prior_quantiles"]) < 0):
            raise ValueError("values must be finite and the prior's quantiles non-decreasing")
        settings = [float(data[k]) for k in ("mean_opening", "energy_weight", "lead_seconds", "smooth_rows")]
        if not (np.isfinite(settings).all() and 1 <= settings[3] <= 101 and abs(settings[2]) <= 1.0):
            raise ValueError("settings out of range (smooth_rows 1-101, lead_seconds within +-1 s)")
        return cls(mean_opening=settings[0], energy_weight=settings[1], lead_seconds=settings[2],
                   smooth_rows=int(settings[3]), **arrays)


LIP_DRIVES = ("auto", "prior", "audio")
"""What drives the mouth of an avatar with a lip prior. ``auto``: the prior for any new audio, the
model's audio-to-lip head for the training clip's own audio (it learned that voice: Obama's
held-out mouth PSNR 28.41 dB with the head, 27.70 with the prior; other voices: opening
correlation 0.13 with the head, 0.34 with the prior). ``prior`` / ``audio``: always that one."""


def check_lip_drive(lip_drive: str, prior: LipPrior | None, run_dir: str | os.PathLike) -> None:
    """Refuse, in one line, an unknown ``lip_drive`` or ``prior`` for a run that has none."""
    from talk3d.errors import UserError

    if lip_drive not in LIP_DRIVES:
        raise UserError(f"--lip-drive must be one of {', '.join(LIP_DRIVES)}, got '{lip_drive}'")
    if lip_drive == "prior" and prior is None:
        raise UserError(f"run '{run_dir}' has no phonetic lip prior: run 'talk3d fit DATASET -o {run_dir}' to add "
                        f"it (no training), or use --lip-drive audio")


DECODE_MARGIN_SECONDS = 1.0
"""Audio decoded beyond the last rendered frame when only the start of a file is rendered (the
prior reads ahead and smooths; the phone loop's context reaches a few phones)."""


def driving_phones(prior: LipPrior | None, samples: np.ndarray, lip_drive: str = "auto",
                   seconds: float | None = None) -> np.ndarray | None:
    """Phone rows of new driving audio ``samples (S,)`` (16 kHz) when the prior drives the mouth;
    None when the audio head does (no prior, or ``lip_drive == "audio"``). With ``seconds``, only
    the first ``seconds`` (+ :data:`DECODE_MARGIN_SECONDS`) are decoded and the rows after them are
    silence: for renders of the start of a long file; the rows always number ``ceil(S / 160)``."""
    if prior is None or lip_drive == "audio":
        return None
    from talk3d.audio import num_feature_frames
    from talk3d.phonemes import SIL, phone_rows

    samples = np.asarray(samples)
    if seconds is None:
        return phone_rows(samples)
    head = phone_rows(samples[: int(round((seconds + DECODE_MARGIN_SECONDS) * 16000))])
    out = np.zeros((num_feature_frames(samples.shape[0]), head.shape[1]), np.float32)
    out[:, SIL] = 1.0
    out[: head.shape[0]] = head
    return out


def own_clip_phones(prior: LipPrior | None, phonemes: np.ndarray | None, lip_drive: str = "auto") -> np.ndarray | None:
    """The training clip's phone rows when the prior drives the mouth on the clip's own audio
    (only ``lip_drive == "prior"``); None when the audio head does."""
    return phonemes if prior is not None and lip_drive == "prior" else None
