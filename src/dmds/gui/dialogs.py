"""The desktop client's dialogs: REGISTER (full name, alias, birth date; in session mode a password
twice), an alias prompt (classic CONNECT, UNREGISTER), an alias and password prompt (session LOG IN,
UNREGISTER), settings (protocol, server, ports, normaliser).

Each dialog validates as the person types: the OK button is enabled only when the fields are
acceptable, and a line under the fields says what is wrong. Password fields do not show what is
typed; their text goes to the worker when OK is pressed and is kept nowhere else.
"""

from __future__ import annotations

import unicodedata
from typing import Final

from PySide6.QtCore import QDate
from PySide6.QtWidgets import (
    QButtonGroup,
    QDateEdit,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QRadioButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from dmds.gui.settings import Mode

__all__ = [
    "DATE_FORMAT",
    "AliasDialog",
    "LoginDialog",
    "RegisterDialog",
    "SettingsDialog",
    "alias_problem",
]

#: Birth dates travel as DD/MM/YYYY (classic.md); QDate's spelling of that format.
DATE_FORMAT: Final = "dd/MM/yyyy"
OLDEST_BIRTH_DATE: Final = QDate(1900, 1, 1)
_ERROR_STYLE: Final = "color: #b00020;"
MIN_WIDTH: Final = 380
#: Said under a new password; the server decides (`--min-password-length`, 8 by default).
LENGTH_ADVICE: Final = "at least 8 characters (the server's default)"


def _password_field() -> QLineEdit:
    field = QLineEdit()
    field.setEchoMode(QLineEdit.EchoMode.Password)
    return field


def alias_problem(alias: str) -> str:
    """What is wrong with `alias` as typed, or "" if nothing."""
    if not alias:
        return "the alias is empty"
    if any(ch.isspace() for ch in alias):
        return "the alias cannot contain spaces"
    if any(unicodedata.category(ch) == "Cc" for ch in alias):
        return "the alias cannot contain control characters"
    return ""


class _ValidatedDialog(QDialog):
    """A form with OK/Cancel and an error line; subclasses say what is wrong in `problems`."""

    def __init__(self, title: str, parent: QWidget | None) -> None:
        super().__init__(parent)
        self.setWindowTitle(title)
        self.setMinimumWidth(MIN_WIDTH)
        self.form = QFormLayout()
        self.error_label = QLabel()
        self.error_label.setStyleSheet(_ERROR_STYLE)
        self.error_label.setWordWrap(True)
        self.buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
        )
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        self.intro = QLabel()
        self.intro.setWordWrap(True)
        self.intro.hide()
        layout.addWidget(self.intro)
        layout.addLayout(self.form)
        layout.addWidget(self.error_label)
        layout.addWidget(self.buttons)

    @property
    def ok_button(self) -> QPushButton:
        return self.buttons.button(QDialogButtonBox.StandardButton.Ok)

    def set_intro(self, text: str) -> None:
        self.intro.setText(text)
        self.intro.setVisible(bool(text))

    def problems(self) -> list[str]:
        return []

    def revalidate(self) -> None:
        problems = self.problems()
        self.error_label.setText("; ".join(problems))
        self.ok_button.setEnabled(not problems)

    def accept(self) -> None:
        if not self.problems():  # Enter in a field also lands here
            super().accept()


class RegisterDialog(_ValidatedDialog):
    """REGISTER: full name, alias (no spaces) and birth date (a date picker, not in the future); with
    `with_password` (session mode) also a password, typed twice."""

    def __init__(
        self,
        parent: QWidget | None = None,
        *,
        alias: str = "",
        today: QDate | None = None,
        with_password: bool = False,
    ) -> None:
        super().__init__("Register a user", parent)
        self.with_password = with_password
        intro = "A new user of the service. The alias is the name others send messages to."
        if with_password:
            intro += " The password protects it: only who knows it can log in as this user."
        self.set_intro(intro)
        self._today = today or QDate.currentDate()
        self.full_name = QLineEdit()
        self.full_name.setPlaceholderText("e.g. Juan Pérez")
        self.alias = QLineEdit(alias)
        self.alias.setPlaceholderText("e.g. juan123 (no spaces)")
        self.birth_date = QDateEdit()
        self.birth_date.setCalendarPopup(True)
        self.birth_date.setDisplayFormat(DATE_FORMAT)
        self.birth_date.setDateRange(OLDEST_BIRTH_DATE, self._today)
        self.birth_date.setDate(QDate(2000, 1, 1) if QDate(2000, 1, 1) <= self._today else self._today)
        self.form.addRow("Full name:", self.full_name)
        self.form.addRow("Alias:", self.alias)
        self.form.addRow("Birth date:", self.birth_date)
        self.password = _password_field()
        self.password.setPlaceholderText(LENGTH_ADVICE)
        self.confirmation = _password_field()
        self.confirmation.setPlaceholderText("the same password again")
        if with_password:
            self.form.addRow("Password:", self.password)
            self.form.addRow("Password again:", self.confirmation)
        else:
            for field in (self.password, self.confirmation):
                field.setParent(self)
                field.hide()
        for field in (self.full_name, self.alias, self.password, self.confirmation):
            field.textChanged.connect(self.revalidate)
        self.birth_date.dateChanged.connect(self.revalidate)
        self.revalidate()

    def problems(self) -> list[str]:
        problems = []
        if not self.full_name.text().strip():
            problems.append("the full name is empty")
        elif any(unicodedata.category(ch) == "Cc" for ch in self.full_name.text()):
            problems.append("the full name cannot contain control characters")
        if problem := alias_problem(self.alias.text()):
            problems.append(problem)
        date = self.birth_date.date()
        if not date.isValid():
            problems.append("the birth date is not a date")
        elif date > self._today:
            problems.append("the birth date is in the future")
        if self.with_password:
            if not self.password.text():
                problems.append("the password is empty")
            elif self.confirmation.text() != self.password.text():
                problems.append("the passwords differ")
        return problems

    def values(self) -> tuple[str, str, str]:
        """(full name, alias, birth date as DD/MM/YYYY)."""
        return (
            " ".join(self.full_name.text().split()),
            self.alias.text(),
            self.birth_date.date().toString(DATE_FORMAT),
        )

    def password_value(self) -> str:
        """The password typed (session mode)."""
        return self.password.text()


class AliasDialog(_ValidatedDialog):
    """Asks for one alias (CONNECT, UNREGISTER)."""

    def __init__(self, title: str, intro: str, alias: str = "", parent: QWidget | None = None) -> None:
        super().__init__(title, parent)
        self.set_intro(intro)
        self.alias = QLineEdit(alias)
        self.alias.selectAll()
        self.form.addRow("Alias:", self.alias)
        self.alias.textChanged.connect(self.revalidate)
        self.revalidate()

    def problems(self) -> list[str]:
        problem = alias_problem(self.alias.text())
        return [problem] if problem else []

    def value(self) -> str:
        return self.alias.text()


class LoginDialog(_ValidatedDialog):
    """Asks for an alias and its password (session mode: LOG IN, UNREGISTER). With `fixed_alias`
    the alias is shown but cannot be changed (UNREGISTER of the user logged in)."""

    def __init__(
        self,
        title: str,
        intro: str,
        alias: str = "",
        parent: QWidget | None = None,
        *,
        fixed_alias: bool = False,
    ) -> None:
        super().__init__(title, parent)
        self.set_intro(intro)
        self.alias = QLineEdit(alias)
        self.alias.setReadOnly(fixed_alias)
        self.password = _password_field()
        self.form.addRow("Alias:", self.alias)
        self.form.addRow("Password:", self.password)
        for field in (self.alias, self.password):
            field.textChanged.connect(self.revalidate)
        self.revalidate()
        (self.password if alias else self.alias).setFocus()

    def problems(self) -> list[str]:
        problems = []
        if problem := alias_problem(self.alias.text()):
            problems.append(problem)
        if not self.password.text():
            problems.append("the password is empty")
        return problems

    def value(self) -> str:
        """The alias."""
        return self.alias.text()

    def values(self) -> tuple[str, str]:
        """(alias, password)."""
        return self.alias.text(), self.password.text()


class SettingsDialog(_ValidatedDialog):
    """Protocol (classic or session), server, the port of each protocol, and normaliser URL."""

    def __init__(
        self,
        server: str,
        port: int,
        ws_url: str,
        parent: QWidget | None = None,
        *,
        mode: Mode = Mode.CLASSIC,
        session_port: int = 7001,
    ) -> None:
        super().__init__("Settings", parent)
        self.classic_button = QRadioButton("classic")
        self.classic_button.setToolTip("The original protocol: CONNECT by alias, no password")
        self.session_button = QRadioButton("session")
        self.session_button.setToolTip(
            "One connection, passwords, delivered and read receipts, presence, attachments"
        )
        self.modes = QButtonGroup(self)
        self.modes.addButton(self.classic_button)
        self.modes.addButton(self.session_button)
        (self.session_button if mode is Mode.SESSION else self.classic_button).setChecked(True)
        mode_row = QHBoxLayout()
        mode_row.addWidget(self.classic_button)
        mode_row.addWidget(self.session_button)
        mode_row.addStretch(1)
        self.server = QLineEdit(server)
        self.port = QSpinBox()
        self.port.setRange(1, 65535)
        self.port.setValue(port)
        self.session_port = QSpinBox()
        self.session_port.setRange(1, 65535)
        self.session_port.setValue(session_port)
        self.ws_url = QLineEdit(ws_url)
        self.ws_url.setMinimumWidth(320)
        self.form.addRow("Protocol:", mode_row)
        self.form.addRow("Server:", self.server)
        self.form.addRow("Port:", self.port)
        self.form.addRow("Session port:", self.session_port)
        self.form.addRow("Normaliser WSDL URL:", self.ws_url)
        for field in (self.server, self.ws_url):
            field.textChanged.connect(self.revalidate)
        self.revalidate()

    def problems(self) -> list[str]:
        problems = []
        server = self.server.text().strip()
        if not server or any(ch.isspace() for ch in server):
            problems.append("the server must be a host name or an address")
        url = self.ws_url.text().strip()
        if not url.startswith(("http://", "https://")):
            problems.append("the normaliser URL must start with http:// or https://")
        return problems

    def values(self) -> tuple[str, int, str]:
        """(server, classic port, normaliser URL)."""
        return self.server.text().strip(), self.port.value(), self.ws_url.text().strip()

    def mode(self) -> Mode:
        return Mode.SESSION if self.session_button.isChecked() else Mode.CLASSIC

    def session_port_value(self) -> int:
        return self.session_port.value()
