# The models of both tiers' stages (components/models-volume/export.sh: `model NAME FAMILY SOURCE
# [OPTIONS]`). Replace the sources with your own checkpoints; NAME is the stage's /models/NAME.
model lid fasttext hub:facebook/fasttext-language-identification:model.bin --profile lid
model quality fasttext hub:mlfoundations/fasttext-oh-eli5:openhermes_reddit_eli5_vs_rw_v2_bigram_200k_train.bin --profile dclm
model toxicity hf hub:unitary/toxic-bert --kind multilabel
model lm causal-lm hub:EleutherAI/pythia-160m
