"""instance_dict: a driver object's instance attributes, read without changing what it holds."""

from __future__ import annotations

import sqlite3
from typing import Any

from tether.simple_pool import instance_dict


class Plain:
    def __init__(self) -> None:
        self.host = "db"
        self.port = 5432


class Guarded(Plain):
    """A class whose own __setattr__ must not see tether's read (pg.DB passes assignments on)."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "__dict__":
            raise AssertionError("instance_dict went through the class's __setattr__")
        super().__setattr__(name, value)


class Slotted:
    __slots__ = ("host",)

    def __init__(self) -> None:
        self.host = "db"


def test_it_answers_the_instance_attributes_and_leaves_them_working() -> None:
    obj = Plain()
    assert instance_dict(obj) == {"host": "db", "port": 5432}
    assert (obj.host, obj.port) == ("db", 5432)
    obj.user = "tether"  # type: ignore[attr-defined]
    obj.port = 6432
    assert vars(obj) == {"host": "db", "port": 6432, "user": "tether"}
    assert instance_dict(obj) == vars(obj)


def test_a_class_of_its_own_setattr_is_not_called() -> None:
    obj = Guarded()
    assert instance_dict(obj) == {"host": "db", "port": 5432}
    assert obj.host == "db"


def test_objects_without_an_instance_dict_answer_none() -> None:
    assert instance_dict(Slotted()) is None
    assert instance_dict(sqlite3.connect(":memory:")) is None
    assert instance_dict(Plain) is None  # a class's __dict__ is a mappingproxy
