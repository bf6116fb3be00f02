"""Core: section ids and names, the one validator (field, value, fix), markdown tables. Imports nothing above it."""
