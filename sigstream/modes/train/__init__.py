"""Fine-tuning (LoRA, QLoRA, prefix tuning) and evaluation of the sentiment classifier."""
