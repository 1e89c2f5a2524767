#!/usr/bin/env bash
# Makes the training and evaluation text (kept out of git; regenerated here from Debian packages,
# which it installs when they are missing):
#   data/emma.txt            held out for evaluation (Jane Austen, Emma)
#   data/train_austen.txt    the five other Austen novels (r-cran-janeaustenr)
#   data/train_kjv.txt       the King James Bible, verse references stripped (bible-kjv)
#   data/train_fortunes.txt  the English fortune cookies, one a paragraph (fortunes)
set -euo pipefail
cd "$(dirname "$0")"
if ! command -v Rscript >/dev/null || ! command -v bible >/dev/null || [ ! -d /usr/share/games/fortunes ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq r-cran-janeaustenr bible-kjv fortunes >/dev/null
fi
mkdir -p data
Rscript -e 'library(janeaustenr);
  writeLines(emma, "data/emma.txt");
  writeLines(c(prideprejudice, sensesensibility, mansfieldpark, northangerabbey, persuasion),
             "data/train_austen.txt")'
bible -f "Gen1:1-Rev22:21" | sed 's/^[^ ]* //' > data/train_kjv.txt
# Each fortune file (no extension; .dat/.u8 are indexes and links) holds entries between lines of '%'.
for f in /usr/share/games/fortunes/*; do
  case $f in *.dat|*.u8|*/off|*/ascii-art) continue ;; esac
  [ -f "$f" ] && sed 's/^%$//' "$f"
done > data/train_fortunes.txt
wc -w data/*.txt
