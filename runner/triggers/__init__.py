"""Triggers: what starts a flow without a person at the keyboard.

`models` holds the validated `triggers:` of a flow file (schedule, webhook, flow);
`schedule` the pure rule from a time to the next scheduled times. The loop that fires
them lives with the server.
"""
