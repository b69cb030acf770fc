"""Corruptions that turn a clean response into the hallucinated one a preference pair contrasts it with.

- `text.py`: text-side negatives (HALVA's phrase swaps, POVID's object/attribute/relation edits) on a vocabulary.

Image-side negatives live in `align.data.image_corruptions` (DPO variants read them too). Nothing is imported
here, so `import data_builders.corrupt.<module>` pulls in only what that module needs.
"""
