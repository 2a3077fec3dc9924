"""Replays of recorded history through the loop, and the record they leave.

make demo                 replay/demo.py: the real services over HTTP (python -m replay.demo)
replay/dashboard.py       the per-window table, HTML dashboard and plot of a replay
"""
