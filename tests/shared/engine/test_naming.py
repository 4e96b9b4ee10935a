"""Usernames, aliases, nicknames and locale settings for new users, computed without asking Salesforce."""

from __future__ import annotations

from typing import Any

from shared.engine import SalesforceUserState, alias_for, nickname_for, plan, username_candidates
from shared.mapping import Mapping
from tests.shared.engine.builders import demo_mapping, entra_user, sandbox_catalog

GUEST_UPN = "jane_partner.example.org#EXT#@contoso.onmicrosoft.com"


def created(user_attrs: dict[str, Any], mapping: Mapping | None = None) -> dict[str, object]:
    p = plan(entra_user(**user_attrs), mapping or demo_mapping(), SalesforceUserState(), sandbox_catalog())
    record: dict[str, object] = p.changes[0].after
    return record


def test_the_username_is_the_upn_lower_cased() -> None:
    assert username_candidates(entra_user(upn="Jane.Smith@Contoso.Example.com"), demo_mapping())[0] == \
        "jane.smith@contoso.example.com"


def test_duplicate_candidates_follow_the_format_for_the_executor_to_try_in_order() -> None:
    assert username_candidates(entra_user(), demo_mapping()) == [
        "jane.smith@contoso.example.com",
        "jane.smith.2@contoso.example.com",
        "jane.smith.3@contoso.example.com",
        "jane.smith.4@contoso.example.com",
    ]


def test_a_sandbox_suffix_is_part_of_every_candidate() -> None:
    mapping = Mapping.model_validate({"username": {"suffix": ".uat", "max_attempts": 1}})
    assert username_candidates(entra_user(), mapping) == ["jane.smith@contoso.example.com.uat",
                                                          "jane.smith.2@contoso.example.com.uat"]


def test_on_duplicate_review_gives_a_single_candidate() -> None:
    mapping = Mapping.model_validate({"username": {"on_duplicate": "review"}})
    assert username_candidates(entra_user(), mapping) == ["jane.smith@contoso.example.com"]


def test_the_username_can_come_from_mail() -> None:
    mapping = Mapping.model_validate({"username": {"source": "mail"}})
    assert username_candidates(entra_user(mail="j.smith@contoso.example.com"), mapping)[0] == \
        "j.smith@contoso.example.com"


def test_a_guest_username_is_their_own_address_not_the_ext_upn() -> None:
    assert username_candidates(entra_user(upn=GUEST_UPN, user_type="Guest"), demo_mapping())[0] == \
        "jane@partner.example.org"


def test_no_source_value_means_no_username() -> None:
    mapping = Mapping.model_validate({"username": {"source": "mail"}})
    assert username_candidates(entra_user(mail=None), mapping) == []


def test_alias_is_eight_characters_from_the_name_and_stable_per_user() -> None:
    alias = alias_for(entra_user())
    assert len(alias) == 8 and alias.startswith("jsmi")
    assert alias_for(entra_user()) == alias
    assert alias_for(entra_user(entra_id="another-id")) != alias


def test_alias_folds_accents_and_copes_without_a_surname() -> None:
    assert alias_for(entra_user(givenName="Zoë", surname="Müller")).startswith("zmul")
    assert alias_for(entra_user(surname=None)).startswith("jane")


def test_nickname_is_the_mail_nickname_plus_a_hash_within_forty_characters() -> None:
    nick = nickname_for(entra_user(mailNickname="jane.smith"))
    assert nick.startswith("jane.smith.") and len(nick) == len("jane.smith.") + 8
    assert len(nickname_for(entra_user(mailNickname="x" * 60))) == 40


def test_locale_settings_come_from_usage_location() -> None:
    record = created({"usageLocation": "DE"})
    assert (record["TimeZoneSidKey"], record["LocaleSidKey"], record["LanguageLocaleKey"],
            record["EmailEncodingKey"]) == ("Europe/Berlin", "de_DE", "de", "UTF-8")


def test_locale_falls_back_to_the_country_name() -> None:
    record = created({"usageLocation": None, "country": "France"})
    assert (record["TimeZoneSidKey"], record["LocaleSidKey"]) == ("Europe/Paris", "fr_FR")


def test_locale_of_an_unknown_country_is_the_default() -> None:
    record = created({"usageLocation": "ZZ", "country": None})
    assert (record["TimeZoneSidKey"], record["LocaleSidKey"], record["LanguageLocaleKey"]) == ("GMT", "en_US",
                                                                                                "en_US")


def test_a_country_entry_in_the_mapping_overrides_only_what_it_names() -> None:
    mapping = Mapping.model_validate({
        "attributes": {"LastName": "surname", "Email": "mail"},
        "group_rules": [{"group": "All Employees", "profile": "Standard User"}],
        "locale": {"countries": {"DE": {"time_zone": "Europe/Zurich"}, "Canada": {"language": "fr"}}},
    })
    german = created({"usageLocation": "DE"}, mapping)
    assert (german["TimeZoneSidKey"], german["LocaleSidKey"]) == ("Europe/Zurich", "de_DE")
    canadian = created({"usageLocation": "CA"}, mapping)
    assert (canadian["TimeZoneSidKey"], canadian["LanguageLocaleKey"]) == ("America/Toronto", "fr")
