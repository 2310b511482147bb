"""Names a setting may take that the settings checks and the code behind them both need, in one place and
importable without torch: the face detectors and the model backbones."""

FACE_DETECTORS = ("mtcnn", "haar")  # datasets.face_detectors implements each
DEFAULT_FACE_DETECTOR = "mtcnn"
BACKBONES = ("emotion_llama", "instructblip")  # model.config.ModelConfig.backbone
