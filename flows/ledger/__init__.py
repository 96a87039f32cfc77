"""The ledger domain of the flagship: records, rates, batches, and the tasks that move them."""
