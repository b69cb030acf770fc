"""`align iterate`: on-policy rounds of sample -> pairs -> (SFT) -> DPO -> eval (align.iterate.rounds)."""
