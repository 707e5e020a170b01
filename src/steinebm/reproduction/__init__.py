"""Reproduction: one command per figure and table of the paper, the HTML report and the plots."""
