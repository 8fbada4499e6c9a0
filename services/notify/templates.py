"""Alert texts in Lao and English, chosen by the recipient's ``language``.

Names are given in the recipient's language where the metadata has them
(``nameLo``), so a Lao supervisor reads ຫຼວງນ້ຳທາ, not Luang Namtha.
"""
from __future__ import annotations

SUBJECTS = {
    "INVALID_RETURN": {
        "en": "[statnet] Invalid return: {data_set} {period} from {org_unit}",
        "lo": "[statnet] ລາຍງານບໍ່ຖືກຕ້ອງ: {data_set} ໄລຍະ {period} ຈາກ {org_unit}",
    },
    "LATE_RETURN": {
        "en": "[statnet] Late return: {data_set} {period} from {org_unit}",
        "lo": "[statnet] ລາຍງານຊັກຊ້າ: {data_set} ໄລຍະ {period} ຈາກ {org_unit}",
    },
    "REMINDER": {
        "en": "[statnet] Reminder: {data_set} {period} is due on {due_date}",
        "lo": "[statnet] ແຈ້ງເຕືອນ: ລາຍງານ {data_set} ໄລຍະ {period} ກຳນົດສົ່ງວັນທີ {due_date}",
    },
    "LATE_DIGEST": {
        "en": "[statnet] {count} late return(s) in {org_unit}",
        "lo": "[statnet] ລາຍງານຊັກຊ້າ {count} ສະບັບ ໃນ {org_unit}",
    },
}

BODIES = {
    "INVALID_RETURN": {
        "en": ("Dear {recipient},\n\n"
               "The return {data_set} for period {period} from {org_unit} was {outcome}.\n"
               "Problems found:\n{violations}\n\n"
               "Return id: {return_id}\n\n-- statnet"),
        "lo": ("ຮຽນ {recipient},\n\n"
               "ລາຍງານ {data_set} ສຳລັບໄລຍະ {period} ຈາກ {org_unit} {outcome}.\n"
               "ບັນຫາທີ່ພົບ:\n{violations}\n\n"
               "ລະຫັດລາຍງານ: {return_id}\n\n-- statnet"),
    },
    "LATE_RETURN": {
        "en": ("Dear {recipient},\n\n"
               "No accepted return {data_set} for period {period} has arrived from {org_unit}.\n"
               "It was due on {due_date} and counted as on time until {deadline}.\n\n-- statnet"),
        "lo": ("ຮຽນ {recipient},\n\n"
               "ຍັງບໍ່ທັນໄດ້ຮັບລາຍງານ {data_set} ສຳລັບໄລຍະ {period} ຈາກ {org_unit}.\n"
               "ກຳນົດສົ່ງແມ່ນວັນທີ {due_date} ແລະ ຖືວ່າທັນເວລາຮອດວັນທີ {deadline}.\n\n-- statnet"),
    },
    "REMINDER": {
        "en": ("Dear {recipient},\n\n"
               "The return {data_set} for period {period} from {org_unit} is due on {due_date}.\n"
               "It counts as on time until {deadline}.\n\n-- statnet"),
        "lo": ("ຮຽນ {recipient},\n\n"
               "ລາຍງານ {data_set} ສຳລັບໄລຍະ {period} ຈາກ {org_unit} ກຳນົດສົ່ງແມ່ນວັນທີ {due_date}.\n"
               "ຖືວ່າທັນເວລາຮອດວັນທີ {deadline}.\n\n-- statnet"),
    },
    "LATE_DIGEST": {
        "en": "Dear {recipient},\n\nThese returns are late:\n{lines}\n\n-- statnet",
        "lo": "ຮຽນ {recipient},\n\nລາຍງານເຫຼົ່ານີ້ຊັກຊ້າ:\n{lines}\n\n-- statnet",
    },
}

# Appended to a LATE_RETURN or REMINDER whose return was accepted while it waited for the
# relay: it still goes (recorded is never dropped, CONTRACT 7), saying so, so that its
# "no accepted return has arrived" is not read as the state of today
ANSWERED_SINCE = {
    "LATE_RETURN": {"en": "\nThe period's data have been received since this alert was recorded.",
                    "lo": "\nໄດ້ຮັບຂໍ້ມູນຂອງໄລຍະນີ້ແລ້ວ ຫຼັງຈາກບັນທຶກແຈ້ງເຕືອນນີ້."},
    "REMINDER": {"en": "\nThis return has been received since: nothing more is needed.",
                 "lo": "\nໄດ້ຮັບລາຍງານນີ້ແລ້ວ: ບໍ່ຕ້ອງເຮັດຫຍັງຕື່ມອີກ."},
}

OUTCOMES = {
    "REJECTED": {"en": "rejected", "lo": "ຖືກປະຕິເສດ"},
    "ACCEPTED_WITH_WARNINGS": {"en": "accepted with warnings", "lo": "ຖືກຮັບເອົາ ແຕ່ມີຄຳເຕືອນ"},
}


# "ລາຍງານ {data_set}" ("the return {data_set}") said twice when the data set's own Lao name
# holds the word: "ລາຍງານປະຈຳເດືອນ" (the monthly return), and as often "ບົດລາຍງານ..." (the
# report of ...), which a check for the doubled word alone let through ("ລາຍງານ ບົດລາຍງານ");
# the template's word is left out then ("ຍັງບໍ່ທັນໄດ້ຮັບບົດລາຍງານ...", written together as Lao
# is). In English a name that begins with the word is read on from it: "The return of prices".
_RETURN_WORD = "ລາຍງານ"


def render(kind: str, language: str, **fields) -> tuple[str, str]:
    language = language if language in ("lo", "en") else "en"
    named = language == "lo" and _RETURN_WORD in str(fields.get("data_set", ""))
    return tuple((text[kind][language].replace(f"{_RETURN_WORD} {{data_set}}", "{data_set}") if named
                  else text[kind][language]).format(**fields).replace("return Return", "return")
                 for text in (SUBJECTS, BODIES))
