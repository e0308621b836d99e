"""What rollout/ and learner/ both need and protocols/ cannot hold (it uses torch).

Imports only torch and the standard library; rollout/, learner/, actors/ and driver/ may import it
(tests/test_boundaries.py).
"""
