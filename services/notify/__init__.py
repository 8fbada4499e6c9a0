"""Notify: alerts supervisors about invalid and late returns and reminds reporters
before deadlines, by e-mail and webhook, never twice, never lost."""
