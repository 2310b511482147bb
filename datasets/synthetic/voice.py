"""The voice: prosody cues, pitch contour and a speech-like signal (harmonic source, vowel formants)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SAMPLE_RATE = 16000


@dataclass(frozen=True)
class Voice:
    f0: float  # Hz
    level: float  # RMS of the voiced signal
    rate: float  # syllables per second
    contour: str  # "swings", "falling", "rising_end" or "flat"


def sample_voice(voice_group: int, weak: bool, rng: np.random.Generator) -> tuple[Voice, list[str]]:
    # Speakers differ less than the groups' pitch levels do, so a high or low pitch is a cue, not a speaker trait.
    speaker_f0 = rng.uniform(110, 150)
    if weak:
        # Same monotone whatever the label: mid level, a syllable rate anywhere in the range of all groups.
        return Voice(speaker_f0, rng.uniform(0.09, 0.13), rng.uniform(2.5, 6.5), "flat"), ["voice_flat"]
    if voice_group == 0:
        voice = Voice(speaker_f0 * 1.6, rng.uniform(0.2, 0.28), rng.uniform(5.5, 7.0), "swings")
        return voice, ["loud", "high_pitch", "fast", "pitch_swings"]
    if voice_group == 1:
        voice = Voice(speaker_f0 * 0.7, rng.uniform(0.035, 0.055), rng.uniform(2.2, 3.2), "falling")
        return voice, ["soft", "low_pitch", "slow", "falling"]
    voice = Voice(speaker_f0, rng.uniform(0.09, 0.13), rng.uniform(3.8, 4.6), "rising_end")
    return voice, ["medium_level", "steady_pitch", "rising_end"]


def pitch_contour(voice: Voice, t: np.ndarray, duration: float, rng: np.random.Generator) -> np.ndarray:
    """(T,) f0 in Hz over time ``t`` (seconds)."""
    x = t / duration
    jitter = 1 + 0.01 * np.sin(2 * np.pi * rng.uniform(4, 6) * t)
    if voice.contour == "swings":
        shape = 1 + 0.3 * np.sin(2 * np.pi * voice.rate / 2 * t + rng.uniform(0, 2 * np.pi))
    elif voice.contour == "falling":
        shape = 1.15 - 0.4 * x
    elif voice.contour == "rising_end":
        shape = 1 + 0.6 * np.clip((x - 0.65) / 0.35, 0, 1) ** 1.5
    else:
        shape = np.ones_like(x)
    return voice.f0 * shape * jitter


# (F1, F2) of a few vowels; each syllable picks one at random, independent of the label.
VOWELS = ((730, 1090), (270, 2290), (300, 870), (530, 1840), (570, 840), (660, 1720))


def _resonator_response(freqs: np.ndarray, centre: float, bandwidth: float) -> np.ndarray:
    """Frequency response of a two-pole resonator (a formant) at ``freqs`` Hz."""
    r = np.exp(-np.pi * bandwidth / SAMPLE_RATE)
    z = np.exp(-2j * np.pi * freqs / SAMPLE_RATE)
    return (1 - r) / (1 - 2 * r * np.cos(2 * np.pi * centre / SAMPLE_RATE) * z + r * r * z * z)


def formant_bank(source: np.ndarray) -> list[np.ndarray]:
    """``source`` through each vowel's F1/F2 resonators, each normalised to unit RMS.

    Filtering in the frequency domain (zero-padded, so nothing wraps around) keeps scipy out of the import.
    """
    n_fft = source.size + SAMPLE_RATE // 10
    spectrum = np.fft.rfft(source, n_fft)
    freqs = np.fft.rfftfreq(n_fft, 1 / SAMPLE_RATE)
    bank = []
    for f1, f2 in VOWELS:
        response = _resonator_response(freqs, f1, 90) * _resonator_response(freqs, f2, 120)
        x = np.fft.irfft(spectrum * response, n_fft)[: source.size]
        bank.append(x / (np.sqrt(np.mean(x**2)) + 1e-9))
    return bank


def syllables(duration: float, rate: float, rng: np.random.Generator) -> list[tuple[float, float, int]]:
    """(start s, length s, vowel index) of each syllable, with jittered timing and one pause."""
    out, t = [], rng.uniform(0.05, 0.2)
    pause_at = rng.uniform(0.3, 0.7) * duration
    while t < duration - 0.1:
        length = rng.uniform(0.55, 0.8) / rate
        out.append((t, min(length, duration - 0.05 - t), int(rng.integers(len(VOWELS)))))
        t += rng.uniform(0.9, 1.1) / rate
        if pause_at <= t < pause_at + 1 / rate:
            t += rng.uniform(0.15, 0.3)
    return out


def synthesize_audio(voice: Voice, duration: float, energy: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(T,) float32 mono speech-like signal: harmonic source, vowel formants, syllable envelope.

    ``energy`` (T,) multiplies the loudness so that the voice swells around the visual peak.
    """
    n = int(round(duration * SAMPLE_RATE))
    t = np.arange(n) / SAMPLE_RATE
    phase = np.cumsum(pitch_contour(voice, t, duration, rng) / SAMPLE_RATE)
    source = 2 * (phase % 1.0) - 1  # sawtooth: glottal-like, all harmonics falling as 1/k
    vowels = formant_bank(source)
    voiced, consonants = np.zeros(n), np.zeros(n)
    burst = np.diff(rng.standard_normal(int(0.03 * SAMPLE_RATE) + 1))  # high-passed noise
    for start, length, vowel in syllables(duration, voice.rate, rng):
        i0, i1 = int(start * SAMPLE_RATE), int((start + length) * SAMPLE_RATE)
        env = np.sin(np.linspace(0, np.pi, i1 - i0)) ** 0.7 * rng.uniform(0.8, 1.0)
        voiced[i0:i1] += env * vowels[vowel][i0:i1]
        j1 = min(i0 + burst.size, n)
        consonants[i0:j1] += 0.25 * burst[: j1 - i0] * rng.uniform(0, 1)
    audio = voice.level * (voiced + consonants) * energy + rng.uniform(0.002, 0.006) * rng.standard_normal(n)
    return np.clip(audio, -1, 1).astype(np.float32)
