import subprocess
import sys

import cred

EXPECTED = {
    "UsernamePassword", "Anonymous",
    "ICredentials", "IUsernamePassword", "IAnonymous", "ICredentialsChecker",
    "IScramVerifierSource", "IKeyring", "IRealm", "IService",
    "InMemoryChecker", "StoreChecker", "AllowAnonymous",
    "Portal", "ScramChallenge", "LoginResult", "ScramLoginResult",
    "PerspectiveKey", "ANONYMOUS", "Service", "ServiceRealm",
    "ScramClient", "ScramServer", "ScramVerifier", "ClientCache", "default_client_cache",
    "AccountStore", "Throttle", "TicketStore", "ChallengeHost", "ServiceRequired",
    "CredError", "Unauthorized", "LOGIN_FAILED", "ScramError", "StoreError",
    "MissingDatabase", "SchemaVersionError", "DuplicateUser", "UnknownUser",
    "DuplicateService", "UnknownService", "NotGranted", "InvalidName",
}


def test_public_names_are_pinned():
    assert set(cred.__all__) == EXPECTED
    assert len(cred.__all__) == len(EXPECTED)
    for name in cred.__all__:
        assert getattr(cred, name) is not None


def test_cred_imports_no_broker_services_or_clients():
    code = (
        "import sys, cred, cred.scram, cred.store, cred.portal, cred.realm; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('broker', 'services', 'clients', 'jelly')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True)
    assert out.stdout.strip() == "[]"


def test_unauthorized_always_has_the_same_message_and_pickles():
    import pickle

    error = pickle.loads(pickle.dumps(cred.Unauthorized()))
    assert type(error) is cred.Unauthorized and str(error) == cred.LOGIN_FAILED
    assert cred.LOGIN_FAILED == (
        "login failed: unknown user, wrong password, or no access to that service/perspective"
    )
