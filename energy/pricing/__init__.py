"""Pricing, the lowest stage: energy per op and per memory access from sourced tables (``data/``), the memory
model, process nodes and chips. It knows no model and imports no other stage."""
