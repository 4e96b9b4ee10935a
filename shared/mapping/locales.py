"""Built-in per-country Salesforce settings (time zone, locale, language, email encoding).

Why a table and not a library: Salesforce accepts only its own picklist values (TimeZoneSidKey, LocaleSidKey,
LanguageLocaleKey, EmailEncodingKey), which no locale library emits; the values below are all in Salesforce's lists
(https://help.salesforce.com/s/articleView?id=sf.admin_supported_locales.htm and .._timezone.htm). A country with
several time zones gets the one most staff are in; the mapping's `locale.countries` overrides any entry.
Keys are ISO 3166 alpha-2 codes (Graph's `usageLocation`); `COUNTRY_NAMES` maps the English names Graph's free-text
`country` usually holds.
"""

from __future__ import annotations

#: code -> (time zone, locale, language, email encoding)
BUILT_IN: dict[str, tuple[str, str, str, str]] = {
    "US": ("America/Los_Angeles", "en_US", "en_US", "UTF-8"),
    "CA": ("America/Toronto", "en_CA", "en_US", "UTF-8"),
    "BR": ("America/Sao_Paulo", "pt_BR", "pt_BR", "UTF-8"),
    "GB": ("Europe/London", "en_GB", "en_GB", "UTF-8"),
    "IE": ("Europe/Dublin", "en_IE", "en_GB", "UTF-8"),
    "DE": ("Europe/Berlin", "de_DE", "de", "UTF-8"),
    "CH": ("Europe/Zurich", "de_CH", "de", "UTF-8"),
    "FR": ("Europe/Paris", "fr_FR", "fr", "UTF-8"),
    "ES": ("Europe/Madrid", "es_ES", "es", "UTF-8"),
    "IT": ("Europe/Rome", "it_IT", "it", "UTF-8"),
    "NL": ("Europe/Amsterdam", "nl_NL", "nl_NL", "UTF-8"),
    "SE": ("Europe/Stockholm", "sv_SE", "sv", "UTF-8"),
    "PL": ("Europe/Warsaw", "pl_PL", "pl", "UTF-8"),
    "IN": ("Asia/Kolkata", "en_IN", "en_GB", "UTF-8"),
    "CN": ("Asia/Shanghai", "zh_CN", "zh_CN", "UTF-8"),
    "JP": ("Asia/Tokyo", "ja_JP", "ja", "UTF-8"),
    "AU": ("Australia/Sydney", "en_AU", "en_GB", "UTF-8"),
}

COUNTRY_NAMES: dict[str, str] = {
    "united states": "US", "usa": "US", "canada": "CA", "brazil": "BR", "united kingdom": "GB", "uk": "GB",
    "ireland": "IE", "germany": "DE", "switzerland": "CH", "france": "FR", "spain": "ES", "italy": "IT",
    "netherlands": "NL", "sweden": "SE", "poland": "PL", "india": "IN", "china": "CN", "japan": "JP",
    "australia": "AU",
}
