"""Names a setting may take that the settings checks and the code behind them both need, in one place and
importable without torch: the face detectors and the model backbones."""

FACE_DETECTORS = ("mtcnn", "haar")  # datasets.face_detectors implements each
DEFAULT_FACE_DETECTOR = "mtcnn"
BACKBONES = ("emotion_llama", "instructblip")  # model.config.ModelConfig.backbone
# How a prompt is wrapped into a chat turn (model.prompt_format): the release's literal LLaMA-2 markers, or the
# tokenizer's own chat template (any other chat LLM).
PROMPT_FORMATS = ("release", "chat_template")
# The tiny tokenizers a preset without a weights folder may build (model.tiny_tokenizer): LLaMA-2's SentencePiece-like
# form, or byte-level BPE with a ChatML (Qwen2) or Llama-3 chat template.
TINY_TOKENIZERS = ("llama2", "qwen2", "llama3")
