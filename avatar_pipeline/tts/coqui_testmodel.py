"""A tiny Coqui VITS checkpoint made by our code with coqui-tts itself: the layout a user's
trained checkpoint has (``model.pth`` with ``{"model": state_dict, "config": ...}`` beside its
``config.json``), a phoneme model on espeak IPA, 16 kHz, hop 256, blanks between ids. Its weights
are random (it says noise, with real VITS durations): it exists so the Coqui engine's loading
and timing code can be tested without anyone's weights.

    python -m avatar_pipeline.tts.coqui_testmodel out_dir
"""

from __future__ import annotations

import argparse
from pathlib import Path

# espeak-ng's IPA for our languages, as Coqui's default phoneme set spells it
IPA = ("abcdefhijklmnopqrstuvwxyzæçðøħŋœɐɑɒɓɔɕɖɗɘəɚɛɜɝɞɟɠɡɢɣɤɥɦɧɨɪɫɬɭɮɯɰɱɲɳɴɵɶɸɹɺɻɽɾʀʁʂʃʄʈ"
       "ʉʊʋʌʍʎʏʐʑʒʔʕʘʙʛʜʝʟʡʢʲˈˌːˑ˞βθχᵻⱱ")


def build(out_dir: str | Path, seed: int = 0) -> tuple[Path, Path]:
    """Write ``model.pth`` and ``config.json`` into ``out_dir``; returns their paths."""
    import torch
    from TTS.config.shared_configs import BaseAudioConfig
    from TTS.tts.configs.shared_configs import CharactersConfig
    from TTS.tts.configs.vits_config import VitsArgs, VitsConfig
    from TTS.tts.models.vits import Vits

    torch.manual_seed(seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    chars = CharactersConfig(
        characters_class="TTS.tts.models.vits.VitsCharacters", pad="<PAD>", eos="<EOS>",
        bos="<BOS>", blank="<BLNK>", characters=IPA, punctuations="!'(),-.:;? ",
        phonemes=None, is_unique=True, is_sorted=True)
    args = VitsArgs(
        hidden_channels=32, hidden_channels_ffn_text_encoder=64, num_heads_text_encoder=2,
        num_layers_text_encoder=1, num_layers_posterior_encoder=2, num_layers_flow=1,
        resblock_type_decoder="2", resblock_kernel_sizes_decoder=[3],
        resblock_dilation_sizes_decoder=[[1, 3]], upsample_rates_decoder=[8, 8, 4],
        upsample_initial_channel_decoder=32, upsample_kernel_sizes_decoder=[16, 16, 8],
        use_sdp=False, init_discriminator=False)
    config = VitsConfig(
        model_args=args, characters=chars, use_phonemes=True, phonemizer="espeak",
        phoneme_language="en-us", add_blank=True, text_cleaner="no_cleaners",
        audio=BaseAudioConfig(sample_rate=16000, hop_length=256, win_length=1024,
                              fft_size=1024, num_mels=80, mel_fmin=0, mel_fmax=None))
    # built without Coqui's phonemizer (it needs the espeak-ng program); saved as a phoneme model
    config.use_phonemes = False
    model = Vits(config)
    config.use_phonemes = True
    model_path, config_path = out / "model.pth", out / "config.json"
    torch.save({"model": model.state_dict(), "config": config.to_dict()}, model_path)
    config.save_json(str(config_path))
    return model_path, config_path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out_dir")
    ap.add_argument("--seed", type=int, default=0)
    model, config = build(ap.parse_args().out_dir, ap.parse_args().seed)
    print(model, config)


if __name__ == "__main__":
    main()
