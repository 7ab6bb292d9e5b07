"""The tags every card this project writes carries, so that a search on the Hub finds its repos.

Not a bare `dora`: on the Hub that names PEFT's weight-decomposed LoRA, whose adapters carry it, so
a search for it finds adapters. `arxiv:2310.08584` links the paper's page to the repo.
"""

FINDABLE_TAGS: tuple[str, ...] = ("discover-and-track", "walking-tours", "arxiv:2310.08584", "self-supervised")
