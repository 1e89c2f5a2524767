#!/usr/bin/env bash
# Makes the training and evaluation text (kept out of git; regenerated here from Debian packages):
#   data/emma.txt          held out for evaluation (Jane Austen, Emma)
#   data/train_austen.txt  the five other Austen novels
#   data/train_kjv.txt     the King James Bible, verse references stripped
# Needs r-cran-janeaustenr (Rscript) and bible-kjv (the `bible` command).
set -euo pipefail
cd "$(dirname "$0")"
mkdir -p data
Rscript -e 'library(janeaustenr);
  writeLines(emma, "data/emma.txt");
  writeLines(c(prideprejudice, sensesensibility, mansfieldpark, northangerabbey, persuasion),
             "data/train_austen.txt")'
bible -f "Gen1:1-Rev22:21" | sed 's/^[^ ]* //' > data/train_kjv.txt
wc -w data/*.txt
