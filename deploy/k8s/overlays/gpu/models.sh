# The models of selectd.toml's stages (components/models-volume/export.sh: `model NAME FAMILY
# SOURCE [OPTIONS]`). Replace the source with your own classifier; NAME is the stage's /models/NAME.
model toxicity hf hub:unitary/toxic-bert --kind multilabel
