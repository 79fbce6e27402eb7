"""For bad days: the emergency stop (everything the stack owns, gone within one deadline) and the
doctor (is this machine ready to run the stack?).

Uses the stack's graph and the tiers below it; independent of health and backup.
"""
