"""Signal processing in JAX: STFT and mels, Tacotron2's STFT, sinc resampling, the CQT."""
