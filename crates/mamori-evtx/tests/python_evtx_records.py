"""Independent reader for the cross-check test: python-evtx (williballenthin/python-evtx).

Prints one JSON object per record of the EVTX file named on the command line:
record id, EventID, Channel, Computer, TimeCreated (microseconds since the epoch) and the
EventData `Data` elements (named ones as a map, unnamed ones as a list of texts).
"""
import datetime
import json
import re
import sys
import xml.etree.ElementTree as ET

import Evtx.Evtx as evtx

NS = "{http://schemas.microsoft.com/win/2004/08/events/event}"


def text_of(element):
    return element.text if element is not None and element.text is not None else ""


def data_text(element):
    # python-evtx writes a string-array value as escaped `<string>..</string>` items; Windows
    # and the evtx crate give the values themselves.
    return re.sub(r"</?string>", "", text_of(element))


def main(path):
    with evtx.Evtx(path) as log:
        for record in log.records():
            try:
                root = ET.fromstring(record.xml())
            except Exception as error:  # a record python-evtx cannot render
                print(json.dumps({"record_id": record.record_num(), "error": str(error)}))
                continue
            system = root.find(NS + "System")
            created = system.find(NS + "TimeCreated").get("SystemTime")
            when = datetime.datetime.fromisoformat(created)
            if when.tzinfo is None:
                when = when.replace(tzinfo=datetime.timezone.utc)
            named, unnamed = {}, []
            event_data = root.find(NS + "EventData")
            if event_data is not None:
                for data in event_data.findall(NS + "Data"):
                    name = data.get("Name")
                    if name:
                        named[name] = data_text(data)
                    else:
                        unnamed.append(data_text(data))
            print(json.dumps({
                "record_id": record.record_num(),
                "event_id": int(text_of(system.find(NS + "EventID"))),
                "event_record_id": int(text_of(system.find(NS + "EventRecordID"))),
                "channel": text_of(system.find(NS + "Channel")),
                "computer": text_of(system.find(NS + "Computer")),
                "time_us": int(when.timestamp()) * 1_000_000 + when.microsecond,
                "named": named,
                "unnamed": unnamed,
            }))


if __name__ == "__main__":
    main(sys.argv[1])
