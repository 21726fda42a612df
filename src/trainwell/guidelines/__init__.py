"""The chapter's practical guidelines, executable: recipes that write configs, and an advisor that reads them.

- :mod:`~trainwell.guidelines.recipes`: ``default``, ``self-normalizing``, ``sparse``, ``low-latency``,
  ``risk-sensitive`` as complete configs whose every choice carries a comment citing the guideline
  (``trainwell new``, ``trainwell recipes``);
- :mod:`~trainwell.guidelines.advisor`: rules, pure functions of a validated config, that report where it
  departs from the guidelines, with a severity, the citation and the fix (``trainwell advise``);
- :mod:`~trainwell.guidelines.thresholds`: every number the two compare against, named and explained;
- :mod:`~trainwell.guidelines.sources`: the citations; :mod:`~trainwell.guidelines.facts`: what the rules read
  off a config (layers with their key paths, hidden layers, initializer families, steps per epoch);
  :mod:`~trainwell.guidelines.toml_text`: the commented-TOML writer.
"""

from trainwell.guidelines.advisor import RULES, Finding, advise
from trainwell.guidelines.recipes import RECIPES, options_for, render_recipe, write_recipe

__all__ = ["RECIPES", "RULES", "Finding", "advise", "options_for", "render_recipe", "write_recipe"]
