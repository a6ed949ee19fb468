"""The desktop client's dialogs: REGISTER (full name, alias, birth date), an alias prompt, settings.

Each dialog validates as the person types: the OK button is enabled only when the fields are
acceptable, and a line under the fields says what is wrong.
"""

from __future__ import annotations

import unicodedata
from typing import Final

from PySide6.QtCore import QDate
from PySide6.QtWidgets import (
    QDateEdit,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

__all__ = ["DATE_FORMAT", "AliasDialog", "RegisterDialog", "SettingsDialog", "alias_problem"]

#: Birth dates travel as DD/MM/YYYY (classic.md); QDate's spelling of that format.
DATE_FORMAT: Final = "dd/MM/yyyy"
OLDEST_BIRTH_DATE: Final = QDate(1900, 1, 1)
_ERROR_STYLE: Final = "color: #b00020;"
MIN_WIDTH: Final = 380


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
    """REGISTER: full name, alias (no spaces) and birth date (a date picker, not in the future)."""

    def __init__(self, parent: QWidget | None = None, *, alias: str = "", today: QDate | None = None) -> None:
        super().__init__("Register a user", parent)
        self.set_intro("A new user of the service. The alias is the name others send messages to.")
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
        for field in (self.full_name, self.alias):
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
        return problems

    def values(self) -> tuple[str, str, str]:
        """(full name, alias, birth date as DD/MM/YYYY)."""
        return (
            " ".join(self.full_name.text().split()),
            self.alias.text(),
            self.birth_date.date().toString(DATE_FORMAT),
        )


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


class SettingsDialog(_ValidatedDialog):
    """Server, port and normaliser URL."""

    def __init__(self, server: str, port: int, ws_url: str, parent: QWidget | None = None) -> None:
        super().__init__("Settings", parent)
        self.server = QLineEdit(server)
        self.port = QSpinBox()
        self.port.setRange(1, 65535)
        self.port.setValue(port)
        self.ws_url = QLineEdit(ws_url)
        self.ws_url.setMinimumWidth(320)
        self.form.addRow("Server:", self.server)
        self.form.addRow("Port:", self.port)
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
        return self.server.text().strip(), self.port.value(), self.ws_url.text().strip()
