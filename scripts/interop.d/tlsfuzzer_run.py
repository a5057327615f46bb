"""Runs one tlsfuzzer script by name: `tlsfuzzer_run.py test-tls13-keyupdate -h HOST -p PORT ...`.

The snapshot in ../shared/tlsfuzzer keeps scripts/ as stubs of symbolic links; each script is
the module tlsfuzzer._apps.<name> (dashes as underscores), whose main() reads sys.argv."""
import importlib
import random
import sys

# The scripts pick a random sample of their conversations: one seed, so that the same
# conversations run against each server and their results can be compared one by one.
random.seed(6455)
name = sys.argv.pop(1)
sys.argv[0] = name
importlib.import_module("tlsfuzzer._apps." + name.replace("-", "_")).main()
