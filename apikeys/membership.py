"""Who sees which rows in the admin: operators by Django's permissions, members by team.

A staff user who holds any of a model's permissions (view, add, change or delete; a
superuser holds them all) is an operator for that model and sees every row, as Django's
admin always did. A staff user who holds none of them and belongs to teams is a member:
the admin shows them their teams' rows only (apikeys/admin.py, TeamScopedAdmin).

Membership itself grants the access, not a group of permissions: a group's permissions
are model-wide (view_apikey is every key), so a member given one would see every team's
keys the moment one queryset forgot its filter; with no permissions at all, a forgotten
filter shows nothing. Adding a user to a team is then the whole set-up: is_staff so that
they may log in, and the team.
"""

from django.contrib.auth import get_permission_codename

ACTIONS = ("view", "add", "change", "delete")


def member_team_ids(request):
    """Return the ids of the teams the request's user belongs to, read once per request."""
    ids = getattr(request, "_member_team_ids", None)
    if ids is None:
        user = request.user
        ids = frozenset(user.teams.values_list("pk", flat=True)) if user.is_active else ()
        request._member_team_ids = ids = frozenset(ids)
    return ids


def is_operator(user, model):
    """Tell whether the user holds any of the model's permissions."""
    opts = model._meta
    return any(
        user.has_perm(f"{opts.app_label}.{get_permission_codename(action, opts)}")
        for action in ACTIONS
    )


def team_scope(request, model):
    """Return None when the user sees every row of the model, else the ids of the teams
    whose rows they may see (empty for a user in no team)."""
    if is_operator(request.user, model):
        return None
    return member_team_ids(request)
