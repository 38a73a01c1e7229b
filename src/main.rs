fn main() {
    let _ = camgate::config::Config::embedded();
}
