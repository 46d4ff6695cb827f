# Exports the models that models.sh lists into /models, each once. A line of models.sh:
#   model NAME FAMILY SOURCE [EXPORT OPTIONS...]   ->   selectd export FAMILY [OPTIONS] SOURCE /models/NAME
# SOURCE is a path in the container, or hub:REPO (a Hugging Face checkpoint) or hub:REPO:FILE (one
# file of it, e.g. a fastText .bin), downloaded only when the model is missing. A directory with a
# manifest.json is complete and skipped; an export writes NAME.partial and renames it at the end,
# so an interrupted run never leaves a directory the daemon would load (the daemon also checks
# every file's sha256 against the manifest at each load).
set -eu

fetch() {
    case "$1" in
        hub:*) python -c 'import sys; from huggingface_hub import hf_hub_download, snapshot_download
repo, _, name = sys.argv[1].partition(":")
print(hf_hub_download(repo, name) if name else snapshot_download(repo))' "${1#hub:}" ;;
        *) echo "$1" ;;
    esac
}

model() {
    name=$1 family=$2 source=$3
    shift 3
    if [ -f "/models/$name/manifest.json" ]; then
        echo "/models/$name: present"
        return
    fi
    rm -rf "/models/$name.partial"
    selectd export "$family" "$@" "$(fetch "$source")" "/models/$name.partial"
    mv "/models/$name.partial" "/models/$name"
}

. /scripts/models.sh
