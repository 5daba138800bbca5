"""Comparing: transformer baselines, the bundled variants, decode and context, the audit, the headline and its
intervals, the on-disk cache of baselines and profiles, and the SANA-FE check. Imports pricing and measuring."""
