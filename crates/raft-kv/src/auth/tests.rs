use super::*;

fn build(text: &str) -> Result<Users, ConfigError> {
    Users::build(None, Some(("users.acl", text)))
}

#[test]
fn a_users_file_parses_into_users_with_rules_applied_in_order() {
    let hash = hash_password("hunter2").unwrap();
    let text = format!(
        "# comment\n\nuser alice on #{hash} ~app:* ~cache:* +@read +@write\nuser bob on >clear allkeys +@all -@admin\nuser carol off nopass +@read resetkeys ~x\n"
    );
    let users = build(&text).unwrap();
    assert!(users.required());
    assert!(users.initial_user().is_none());
    let alice = users.authenticate("alice", b"hunter2").unwrap();
    assert!(alice.categories.contains(Category::Read) && alice.categories.contains(Category::Write));
    assert!(!alice.categories.contains(Category::Admin));
    assert!(
        alice.may_access_key(b"app:1") && alice.may_access_key(b"cache:") && !alice.may_access_key(b"other")
    );
    assert_eq!(users.authenticate("alice", b"hunter3").unwrap_err(), AuthFailure::WrongPassword);
    let bob = users.authenticate("bob", b"clear").unwrap();
    assert!(!bob.categories.contains(Category::Admin) && bob.categories.contains(Category::Write));
    assert!(bob.may_access_key(b"anything"));
    assert_eq!(users.authenticate("carol", b"whatever").unwrap_err(), AuthFailure::Disabled);
    assert_eq!(users.authenticate("dave", b"x").unwrap_err(), AuthFailure::UnknownUser);
    assert!(!users.default_has_password(), "no default user in this file");
    // Descriptions never contain a secret.
    for u in users.users() {
        let d = u.describe();
        assert!(!d.contains("clear") && !d.contains("argon2") && !d.contains("hunter2"), "{d}");
        assert!(!format!("{u:?}").contains("argon2"));
    }
}

#[test]
fn mistakes_are_refused_with_the_line_and_without_echoing_secrets() {
    let e = build("user a on >pw\nuser a on >pw2\n").unwrap_err();
    assert_eq!(e.to_string(), "users.acl:2: user 'a' is defined twice");
    let e = build("user a on #notahash\n").unwrap_err();
    assert!(e.to_string().starts_with("users.acl:1: a '#' rule takes an Argon2 PHC string"), "{e}");
    let e = build("user a on mysecretpassword\n").unwrap_err();
    assert!(!e.to_string().contains("mysecretpassword"), "{e}");
    assert!(e.to_string().contains("unknown rule starting with 'm'"), "{e}");
    assert!(build("user a +@bogus\n").unwrap_err().to_string().contains("unknown category '@bogus'"));
    assert!(build("usr a on\n").is_err());
    assert!(build("user\n").is_err());
    assert!(build("user a on >\n").is_err());
    assert!(build("user a on ~\n").is_err());
    assert!(Users::build(Some(""), None).is_err(), "an empty requirepass");
    assert!(Users::build(Some("x"), Some(("f", "user default on nopass"))).is_err());
}

#[test]
fn requirepass_alone_protects_the_default_user() {
    let users = Users::build(Some("pw"), None).unwrap();
    assert!(users.required() && users.default_has_password());
    let u = users.authenticate(DEFAULT_USER, b"pw").unwrap();
    assert_eq!(u.categories, Categories::all());
    assert!(users.authenticate(DEFAULT_USER, b"pw ").is_err());
    assert_eq!(u.describe(), "user default on #<redacted> ~* +@all");
    let open = Users::open();
    assert!(!open.required());
    assert_eq!(open.initial_user().unwrap().describe(), "user default on nopass ~* +@all");
}

#[test]
fn password_files_take_their_first_line() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("pass");
    std::fs::write(&p, "from-file\nignored\n").unwrap();
    let users = Users::load(None, Some(&p), None).unwrap();
    assert!(users.authenticate(DEFAULT_USER, b"from-file").is_ok());
    assert!(Users::load(Some("x"), Some(&p), None).is_err());
    let missing = Users::load(None, Some(&dir.path().join("nope")), None).unwrap_err();
    assert!(missing.to_string().starts_with("cannot read"), "{missing}");
}
