"""The slowest tests of a pytest run, from the JUnit XML it wrote (`pytest --junitxml FILE`).

    python tools/slowest_tests.py FILE [--most 15]

Each test's time is its set-up, call and teardown together (pytest's default for JUnit XML), so a test that builds
a module's shared fixture carries that cost. `.ci/run` prints this at its end.
"""
import argparse
import xml.etree.ElementTree as ET


def slowest(path, most):
    """[(seconds, 'file::test')] of the ``most`` slowest test cases in the JUnit XML file ``path``."""
    cases = []
    for case in ET.parse(path).getroot().iter('testcase'):
        module = case.get('classname', '').replace('.', '/')
        cases.append((float(case.get('time', 0)), f'{module}.py::{case.get("name")}'))
    return sorted(cases, reverse=True)[:most]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('junit_xml')
    parser.add_argument('--most', type=int, default=15)
    args = parser.parse_args()
    for seconds, test in slowest(args.junit_xml, args.most):
        print(f'{seconds:7.1f}  {test}')


if __name__ == '__main__':
    main()
