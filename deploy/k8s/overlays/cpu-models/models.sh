# The models of selectd.toml's stages, exported into the selectd-models volume by the
# selectd-models Job (components/models-volume/export.sh: `model NAME FAMILY SOURCE [OPTIONS]`).
# Replace the sources with your own checkpoints; NAME is the stage's /models/NAME.
model lid fasttext hub:facebook/fasttext-language-identification:model.bin --profile lid
model quality fasttext hub:mlfoundations/fasttext-oh-eli5:openhermes_reddit_eli5_vs_rw_v2_bigram_200k_train.bin --profile dclm
