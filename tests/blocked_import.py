"""Source that, run first in a fresh Python process, makes `import dora_hf` fail there.

Used by the tests that load saved models with `trust_remote_code=True` as a user without the
package would: the process must get every class from the code saved next to the weights.
"""

import textwrap

BLOCK_DORA_HF = textwrap.dedent(
    """
    import importlib.abc, sys

    class BlockDoraHf(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name == "dora_hf" or name.startswith("dora_hf."):
                raise ModuleNotFoundError(f"No module named {name!r}")

    sys.meta_path.insert(0, BlockDoraHf())
    try:
        import dora_hf  # noqa: F401
        raise SystemExit("dora_hf should not be importable here")
    except ModuleNotFoundError:
        pass
    """
)
