#!/usr/bin/env bash
# Download the Llama 2 weights with the signed URL from Meta's approval email.
# Run ./download.sh --help for usage. Written for bash 3.2+ (macOS) and Linux.
set -euo pipefail

PROG=${0##*/}
VALID_MODELS="7B,13B,70B,7B-chat,13B-chat,70B-chat"
REQUEST_PAGE="https://ai.meta.com/resources/models-and-libraries/llama-downloads/"

usage() {
    cat <<EOF
Usage: $PROG [--url URL] [--models LIST] [--target DIR]

Downloads the Llama 2 weights, tokenizer and licence with the signed URL that
Meta emails you after approving your request, and checks every file against
the md5 checklists published with it.

Options (each may also be written --opt=VALUE):
  -u, --url URL       the URL from the email (it contains one '*').
                      Environment: PRESIGNED_URL
  -m, --models LIST   comma-separated models, no spaces; empty or 'all' means
                      all of them: $VALID_MODELS
                      Environment: MODEL_SIZE
  -t, --target DIR    folder to write into (default: current folder).
                      Environment: TARGET_FOLDER
  -h, --help          show this help and exit.

A value given as an option or in the environment skips its prompt, so
  PRESIGNED_URL='https://...' MODEL_SIZE=7B,7B-chat ./$PROG
runs without questions. Otherwise the script asks, reading from stdin:
  printf '%s\n' 'https://...' 7B,13B | ./$PROG
Quote the URL: it contains '&', '?' and '%'.

Layout written under the target folder:
  LICENSE  USE_POLICY.md  tokenizer.model  tokenizer_checklist.chk
  llama-2-7b[-chat]/   consolidated.00.pth                    params.json  checklist.chk
  llama-2-13b[-chat]/  consolidated.00.pth .. consolidated.01.pth  (same)
  llama-2-70b[-chat]/  consolidated.00.pth .. consolidated.07.pth  (same)

Behaviour:
  * Uses curl if installed, else wget.
  * Running it again is safe: a file that already matches its checklist is
    not downloaded again, and a partly downloaded file is resumed.
  * A file failing its md5 check is deleted and reported; the script then
    exits with status 1 (run it again to fetch that file afresh).
  * Links last 24 hours and allow a limited number of downloads. When the
    server refuses the link (HTTP 403) the script stops at once; request a
    new link at $REQUEST_PAGE
  * The signed URL is a credential and is never printed.

Exit status: 0 all files downloaded and verified; 1 download or checksum
failure; 2 bad usage (e.g. unknown model); 3 link expired or refused.
EOF
}

info() { printf '%s\n' "$*"; }
warn() { printf 'Warning: %s\n' "$*" >&2; }
die() {
    local status=$1
    shift
    printf 'Error: %s\n' "$1" >&2
    shift
    [[ $# -eq 0 ]] || printf '       %s\n' "$@" >&2
    exit "$status"
}

lower() { printf '%s' "$1" | tr '[:upper:]' '[:lower:]'; }

# Remove leading/trailing blanks (and a CR from pasted Windows text).
trim() {
    local s=$1
    s=${s%$'\r'}
    while [[ $s == [[:space:]]* ]]; do s=${s#?}; done
    while [[ $s == *[[:space:]] ]]; do s=${s%?}; done
    printf '%s' "$s"
}

# ---------------------------------------------------------------- arguments

url=${PRESIGNED_URL:-}
models_given=0
models_raw=""
if [[ -n ${MODEL_SIZE+x} ]]; then
    models_given=1
    models_raw=$MODEL_SIZE
fi
target=${TARGET_FOLDER:-.}

need_value() {
    [[ $# -ge 2 ]] || die 2 "option $1 needs a value (see --help)"
}

while [[ $# -gt 0 ]]; do
    case $1 in
    -h | --help)
        usage
        exit 0
        ;;
    -u | --url)
        need_value "$@"
        url=$2
        shift 2
        ;;
    --url=*)
        url=${1#*=}
        shift
        ;;
    -m | --models)
        need_value "$@"
        models_raw=$2
        models_given=1
        shift 2
        ;;
    --models=*)
        models_raw=${1#*=}
        models_given=1
        shift
        ;;
    -t | --target)
        need_value "$@"
        target=$2
        shift 2
        ;;
    --target=*)
        target=${1#*=}
        shift
        ;;
    *)
        die 2 "unknown argument: $1 (see --help)"
        ;;
    esac
done

# ---------------------------------------------------------------- tools

if command -v curl >/dev/null 2>&1; then
    downloader=curl
elif command -v wget >/dev/null 2>&1; then
    downloader=wget
else
    die 1 "this script needs curl or wget, and neither is installed." \
        "Install one, e.g.: sudo apt-get install curl (Debian/Ubuntu)," \
        "sudo dnf install curl (Fedora/RHEL), or brew install curl (macOS)."
fi

if command -v md5sum >/dev/null 2>&1; then
    md5_tool=md5sum
elif command -v md5 >/dev/null 2>&1; then
    md5_tool=md5
else
    die 1 "this script needs md5sum (GNU coreutils) or md5 (macOS) to verify downloads." \
        "Install coreutils, e.g.: sudo apt-get install coreutils."
fi

# ---------------------------------------------------------------- prompts

# Show a prompt on stderr and read one line from stdin; false at end of input.
ask() {
    local __reply
    printf '%s' "$2" >&2
    if ! IFS= read -r __reply && [[ -z $__reply ]]; then
        [[ -t 0 ]] || printf '\n' >&2
        return 1
    fi
    [[ -t 0 ]] || printf '\n' >&2
    printf -v "$1" '%s' "$__reply"
}

if [[ -z $url ]]; then
    ask url "Enter the URL from email: " || die 2 "no URL given."
fi
if [[ $models_given -eq 0 ]]; then
    ask models_raw "Enter the list of models to download without spaces ($VALID_MODELS), or press Enter for all: " ||
        models_raw=""
fi

# ---------------------------------------------------------------- validation

# Models: canonical names, in the order given, without duplicates.
models_raw=$(printf '%s' "$models_raw" | tr -d '[:space:]')
if [[ -z $models_raw || $(lower "$models_raw") == all ]]; then
    models_raw=$VALID_MODELS
fi
models=()
bad_models=""
IFS=, read -r -a requested <<<"$models_raw"
for item in "${requested[@]}"; do
    [[ -n $item ]] || continue
    canon=""
    for valid in ${VALID_MODELS//,/ }; do
        if [[ $(lower "$item") == "$(lower "$valid")" ]]; then
            canon=$valid
        fi
    done
    if [[ -z $canon ]]; then
        bad_models="$bad_models${bad_models:+, }$item"
    elif [[ " ${models[*]-} " != *" $canon "* ]]; then
        models+=("$canon")
    fi
done
if [[ -n $bad_models ]]; then
    die 2 "unknown model name(s): $bad_models" \
        "Valid names: $VALID_MODELS (comma-separated, no spaces; empty for all)."
fi
[[ ${#models[@]} -gt 0 ]] || die 2 "no model names given. Valid names: $VALID_MODELS"

url=$(trim "$url")
case $url in
http://* | https://*) ;;
*) die 2 "that does not look like the download URL from the email (it should start with https://)." ;;
esac
url_head=${url%%\**}
url_tail=${url#*\*}
if [[ $url_head == "$url" ]]; then
    die 2 "the URL has no '*' in it. Copy the whole link from the email (it contains one '*')."
fi
if [[ $url_tail == *\** ]]; then
    die 2 "the URL has more than one '*'. Copy the link from the email exactly as it is."
fi

mkdir -p -- "$target" || die 1 "cannot create the target folder: $target"
cd -- "$target" || die 1 "cannot enter the target folder: $target"

tmp_dir=$(mktemp -d "${TMPDIR:-/tmp}/llama-download.XXXXXX")
part_file=""  # a temporary .part file to remove if the script stops early
trap 'rm -rf -- "$tmp_dir"; [[ -z $part_file ]] || rm -f -- "$part_file"' EXIT

# ---------------------------------------------------------------- helpers

file_md5() {
    local out
    if [[ $md5_tool == md5sum ]]; then
        out=$(md5sum -- "$1")
        out=${out%% *}
    else
        out=$(md5 -q "$1")
    fi
    lower "$(trim "$out")"
}

# Print the md5 the checklist $1 records for file name $2 (md5sum format,
# "HASH  NAME" or "HASH *NAME"); fail when it has no entry.
checklist_md5() {
    local line hash name re='^[0-9A-Fa-f]{32}$'
    while IFS= read -r line || [[ -n $line ]]; do
        line=$(trim "$line")
        hash=${line%% *}
        [[ $hash =~ $re ]] || continue
        name=$(trim "${line#"$hash"}")
        name=${name#\*}
        name=${name#./}
        if [[ $name == "$2" ]]; then
            lower "$hash"
            return 0
        fi
    done <"$1"
    return 1
}

# wget -S writes response headers (lines starting with two spaces) to stderr
# before any progress bar. Keep those lines in file $1; pass the rest through.
split_wget_output() {
    local head rest
    : >"$1"
    while IFS= read -r -n 2 head; do
        if [[ $head == "  " ]]; then
            IFS= read -r rest || true
            printf '  %s\n' "$rest" >>"$1"
        else
            if [[ ${#head} -lt 2 ]]; then head="$head"$'\n'; fi
            printf '%s' "$head" >&2
            cat >&2
            return 0
        fi
    done
}

# HTTP status code of the last response in a wget -S header log.
wget_status() {
    local line code=000 re='^ +HTTP/[0-9.]+ ([0-9][0-9][0-9])'
    while IFS= read -r line; do
        if [[ $line =~ $re ]]; then code=${BASH_REMATCH[1]}; fi
    done <"$1"
    printf '%s' "$code"
}

expired() {
    die 3 "the server refused the download link (HTTP $1) while fetching $2." \
        "The link has probably expired: links from Meta's email work for 24 hours and" \
        "for a limited number of downloads. Request a new link at" \
        "$REQUEST_PAGE and run this script again;" \
        "files already downloaded and verified will not be fetched again."
}

# fetch PATH OUT RESUME: download PATH of the release into file OUT, appending
# to OUT when RESUME is 1. Stops the script on errors it cannot get past.
fetch() {
    local path=$1 out=$2 resume=$3 src code=000 rc=0 args
    src="$url_head$path$url_tail"
    local log="$tmp_dir/log"
    if [[ $downloader == curl ]]; then
        args=(--location --fail --connect-timeout 30 --write-out '%{http_code}' --output "$out")
        [[ $resume -eq 1 ]] && args+=(--continue-at -)
        if [[ -t 2 ]]; then
            args+=(--progress-bar)
            code=$(curl "${args[@]}" "$src") || rc=$?
        else
            args+=(--silent --show-error)
            code=$(curl "${args[@]}" "$src" 2>"$log") || rc=$?
        fi
    else
        args=(--quiet --server-response --connect-timeout=30 --output-document="$out")
        [[ $resume -eq 1 ]] && args+=(--continue)
        [[ -t 2 ]] && args+=(--show-progress --progress=bar:force)
        wget "${args[@]}" -- "$src" 2>&1 | split_wget_output "$log" || rc=$?
        code=$(wget_status "$log")
    fi

    case $code in
    401 | 403) expired "$code" "$path" ;;
    404) die 1 "$path was not found on the server (HTTP 404). Check that you asked for models your link covers." ;;
    416)
        # Range not satisfiable while resuming: the local file is already whole.
        [[ $resume -eq 1 && -s $out ]] && return 0
        ;;
    esac
    if [[ $rc -eq 0 && $code == 2?? ]]; then
        return 0
    fi
    if [[ $resume -eq 1 && -s $out && ($rc -eq 33 || $code == 200) ]]; then
        warn "the server cannot resume $path; downloading it from the start."
        rm -f -- "$out"
        fetch "$path" "$out" 0
        return 0
    fi
    if [[ $code != 000 ]]; then
        die 1 "downloading $path failed: the server answered HTTP $code."
    fi
    if [[ $downloader == curl && -s $log ]]; then
        cat -- "$log" >&2
    fi
    die 1 "downloading $path failed ($downloader exit status $rc: network or disk problem)." \
        "Run the script again to resume where it stopped."
}

n_downloaded=0
n_reused=0
n_verified=0
n_unverified=0
failed=""
summary=""

note() { summary="$summary$(printf '  %-28s %s' "$1" "$2")"$'\n'; }

# A small file without a checksum: reuse it when present (it is written
# atomically, so present means complete), else download it.
get_small() {
    local path=$1
    if [[ -s $path ]]; then
        info "Already present: $path"
        n_reused=$((n_reused + 1))
        note "already present" "$path"
        return 0
    fi
    info "Downloading $path"
    part_file="$path.part"
    fetch "$path" "$part_file" 0
    mv -f -- "$part_file" "$path"
    part_file=""
    n_downloaded=$((n_downloaded + 1))
    note "downloaded" "$path"
}

# A file listed in checklist $2: skip it when it already matches, else
# download (resuming a partial file) and verify.
get_checked() {
    local path=$1 checklist=$2 want got had=0
    if ! want=$(checklist_md5 "$checklist" "${path##*/}"); then
        warn "$checklist has no entry for ${path##*/}; it cannot be verified."
        want=""
    fi
    if [[ -s $path ]]; then
        had=1
        if [[ -n $want && $(file_md5 "$path") == "$want" ]]; then
            info "Already downloaded and verified: $path"
            n_reused=$((n_reused + 1))
            n_verified=$((n_verified + 1))
            note "already complete, md5 OK" "$path"
            return 0
        fi
        info "Resuming $path"
    else
        info "Downloading $path"
    fi
    fetch "$path" "$path" "$had"
    n_downloaded=$((n_downloaded + 1))
    if [[ -z $want ]]; then
        n_unverified=$((n_unverified + 1))
        note "downloaded, NOT verified" "$path"
        return 0
    fi
    got=$(file_md5 "$path")
    if [[ $got != "$want" && $had -eq 1 ]]; then
        warn "$path does not match its checksum after resuming; downloading it again from the start."
        rm -f -- "$path"
        fetch "$path" "$path" 0
        got=$(file_md5 "$path")
    fi
    if [[ $got != "$want" ]]; then
        rm -f -- "$path"
        printf 'Error: checksum mismatch for %s (expected %s, got %s); the file was deleted.\n' \
            "$path" "$want" "$got" >&2
        failed="$failed  $path"$'\n'
        note "CHECKSUM FAILED, deleted" "$path"
        return 0
    fi
    n_verified=$((n_verified + 1))
    note "downloaded, md5 OK" "$path"
}

# ---------------------------------------------------------------- download

info "Downloading Llama 2 (${models[*]}) into $PWD using $downloader"

get_small LICENSE
get_small USE_POLICY.md
get_small tokenizer_checklist.chk
get_checked tokenizer.model tokenizer_checklist.chk

for model in "${models[@]}"; do
    model_lc=$(lower "$model")
    model_dir="llama-2-$model_lc"
    case $model_lc in
    7b*) shards=1 ;;
    13b*) shards=2 ;;
    70b*) shards=8 ;;
    esac
    mkdir -p -- "$model_dir"
    get_small "$model_dir/checklist.chk"
    shard=0
    while [[ $shard -lt $shards ]]; do
        get_checked "$(printf '%s/consolidated.%02d.pth' "$model_dir" "$shard")" "$model_dir/checklist.chk"
        shard=$((shard + 1))
    done
    get_checked "$model_dir/params.json" "$model_dir/checklist.chk"
done

info ""
info "Summary ($PWD):"
printf '%s' "$summary"
info "$n_downloaded downloaded, $n_reused already present, $n_verified verified against checklists."
if [[ $n_unverified -gt 0 ]]; then
    warn "$n_unverified file(s) had no checklist entry and were not verified."
fi
if [[ -n $failed ]]; then
    printf 'Error: these files failed their md5 check and were deleted:\n%sRun the script again to download them again.\n' \
        "$failed" >&2
    exit 1
fi
info "All files verified."
