"""devstack.template.load_template: CloudFormation short tags come back in their long form."""

from __future__ import annotations

from pathlib import Path

import pytest

from devstack.template import TEMPLATE_PATH, TemplateError, load_template


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "template.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_short_tags_become_long_form(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
AWSTemplateFormatVersion: 2010-09-09
Resources:
  Thing:
    Type: AWS::SQS::Queue
    Properties:
      A: !Ref Stage
      B: !GetAtt Queue.Arn
      C: !GetAtt [Queue, QueueName]
      D: !Sub "/gpulse/${Stage}/nodes"
      E: !Sub ["${X}-y", {X: !Ref Stage}]
      F: !Join [":", [a, !Ref Stage]]
      G: !If [IsProd, 1, 2]
      H: !Select [0, !Split [",", "a,b"]]
      I: !GetAtt Db.Endpoint.Address
      J: !Equals [!Ref Stage, prod]
""",
    )
    props = load_template(path)["Resources"]["Thing"]["Properties"]
    assert props == {
        "A": {"Ref": "Stage"},
        "B": {"Fn::GetAtt": ["Queue", "Arn"]},
        "C": {"Fn::GetAtt": ["Queue", "QueueName"]},
        "D": {"Fn::Sub": "/gpulse/${Stage}/nodes"},
        "E": {"Fn::Sub": ["${X}-y", {"X": {"Ref": "Stage"}}]},
        "F": {"Fn::Join": [":", ["a", {"Ref": "Stage"}]]},
        "G": {"Fn::If": ["IsProd", 1, 2]},
        "H": {"Fn::Select": [0, {"Fn::Split": [",", "a,b"]}]},
        "I": {"Fn::GetAtt": ["Db", "Endpoint.Address"]},
        "J": {"Fn::Equals": [{"Ref": "Stage"}, "prod"]},
    }


def test_date_like_scalars_stay_strings(tmp_path: Path) -> None:
    doc = load_template(write(tmp_path, "AWSTemplateFormatVersion: 2010-09-09\nResources: {}\n"))
    assert doc["AWSTemplateFormatVersion"] == "2010-09-09"


def test_unknown_tag_is_refused(tmp_path: Path) -> None:
    with pytest.raises(TemplateError, match=r"unknown YAML tag !Bogus"):
        load_template(write(tmp_path, "Resources:\n  X: !Bogus y\n"))


def test_a_document_without_resources_is_refused(tmp_path: Path) -> None:
    with pytest.raises(TemplateError, match="no Resources mapping"):
        load_template(write(tmp_path, "Parameters: {}\n"))


def test_the_repository_template_loads_with_its_transform_and_version() -> None:
    doc = load_template(TEMPLATE_PATH)
    assert doc["AWSTemplateFormatVersion"] == "2010-09-09"
    assert doc["Transform"] == "AWS::Serverless-2016-10-31"
    assert doc["Globals"]["Function"]["Layers"] == [{"Ref": "CoreLayer"}]
