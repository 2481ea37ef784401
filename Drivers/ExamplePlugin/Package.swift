// swift-tools-version: 6.0
// An out-of-tree Herald driver plugin: the worked example of docs/drivers.md.
//
// It builds a shared library that Herald loads at run time:
//   swift build -c release --package-path Drivers/ExamplePlugin
//   herald drivers --plugin-dir Drivers/ExamplePlugin/.build/release
// A plugin depends only on the C header herald_plugin.h (here a link to Herald's copy);
// it does not link Herald, so it keeps working across Herald builds with the same ABI.
import PackageDescription

let package = Package(
    name: "HeraldExamplePlugin",
    products: [.library(name: "HeraldExamplePlugin", type: .dynamic, targets: ["HeraldExamplePlugin"])],
    targets: [
        .target(name: "CHeraldPlugin", path: "Sources/CHeraldPlugin"),
        .target(
            name: "HeraldExamplePlugin", dependencies: ["CHeraldPlugin"], path: "Sources/HeraldExamplePlugin",
            swiftSettings: [.swiftLanguageMode(.v6)]),
    ]
)
